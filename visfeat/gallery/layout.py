"""Where every file of a site lives: one object owns every page and asset path, so no other module (and no
template) spells a path convention. Paths are site-relative POSIX strings; :meth:`SiteLayout.rel` turns one into
a link relative to the page that holds it, so a site opens from any folder, a zip or ``file://``.

    index.html  manifest.json  spec.toml  static/
    MODEL/index.html
    MODEL/SECTION/index.html  MODEL/SECTION/units.js  MODEL/SECTION/UNIT.html  MODEL/SECTION/img/UNIT*.png|webp
    MODEL/_images/IMAGESET/ID[_BOX].webp
    MODEL/PAGES/NAME.html  MODEL/PAGES/img/NAME/FILE   (a stage's own pages, e.g. circuits)
    .visfeat-cache/        (the result store: never removed as stale)
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from .store import CACHE


@dataclass(frozen=True)
class SiteLayout:
    """The paths of one model's site: ``model`` is its folder, ``images`` the image set's short key."""

    model: str
    images: str
    cache: str = CACHE

    index = "index.html"
    manifest = "manifest.json"
    spec = "spec.toml"

    def static(self, name: str) -> str:
        return f"static/{name}"

    def model_page(self) -> str:
        return f"{self.model}/index.html"

    def section_page(self, section: str) -> str:
        return f"{self.model}/{section}/index.html"

    def section_data(self, section: str) -> str:
        """The layer grid's data script (a browser refuses ``fetch()`` on ``file://``: data travels as a script)."""
        return f"{self.model}/{section}/units.js"

    def unit_page(self, section: str, slug: str) -> str:
        return f"{self.model}/{section}/{slug}.html"

    def unit_asset(self, section: str, slug: str, suffix: str) -> str:
        """A unit's picture or file: ``suffix`` follows the unit's slug (``.png``, ``_t.webp``, ``_d0.png``)."""
        return f"{self.model}/{section}/img/{slug}{suffix}"

    def thumbnail(self, section: str, slug: str) -> str:
        return self.unit_asset(section, slug, "_t.webp")

    def dataset_image(self, image_id: int, box: tuple[int, ...] | None = None) -> str:
        """A dataset image (or a patch of it); the folder names the image set, so another set never collides."""
        patch = "" if box is None else "_" + "_".join(map(str, box))
        return f"{self.model}/_images/{self.images[:8]}/{image_id}{patch}.webp"

    def page(self, kind: str, name: str) -> str:
        """A stage's own page (``kind`` a folder such as ``circuits``)."""
        return f"{self.model}/{kind}/{name}.html"

    def page_asset(self, kind: str, name: str, file: str) -> str:
        return f"{self.model}/{kind}/img/{name}/{file}"

    def is_kept(self, rel: str) -> bool:
        """Files a rebuild never removes as stale: the result store."""
        return rel == self.cache or rel.startswith(self.cache + "/")

    @staticmethod
    def rel(page: str, to: str) -> str:
        """The link from ``page`` to ``to`` (both site-relative); ``""`` is the site's root folder."""
        if not to:
            return "../" * page.count("/")
        return posixpath.relpath(to, posixpath.dirname(page) or ".")
