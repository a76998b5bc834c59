"""What the stages draw pages from: the finished plan, the model, the store, the image set, where every file goes
(:class:`~visfeat.gallery.layout.SiteLayout`) and the writer; each stage's records and loaded results read once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..html import Crumb, Frame
from ..version import __version__
from .layout import SiteLayout
from .writer import SiteWriter

THUMB = 128  # grid and link thumbnails (px)
EXAMPLE = 112  # dataset example tiles (px)
GALLERY = "gallery"  # the first breadcrumb: the site's index


@dataclass(frozen=True)
class Page:
    """One page to write: its site path, its template and what the template draws."""

    path: str
    template: str
    context: dict


@dataclass
class Site:
    """A finished build, ready to be drawn."""

    plan: object
    model: object
    store: object
    dataset: object
    layout: SiteLayout
    writer: SiteWriter
    loaded: dict = field(default_factory=dict)

    def once(self, key: tuple, load: Callable[[], object]):
        """``load()`` the first time ``key`` is asked for, the same object afterwards."""
        if key not in self.loaded:
            self.loaded[key] = load()
        return self.loaded[key]

    def record(self, job):
        """The typed record of a finished job (its stage reads it), read once."""
        stage = self.plan.stages[job.stage]
        return self.once(("record", job.stage, job.key), lambda: stage.load(job, self.store))

    def job_of(self, stage: str, section: str, slug: str):
        """``stage``'s job that made unit ``slug`` of ``section``."""
        index = self.once(
            ("jobs", stage),
            lambda: {(j.section, s): j for j in self.plan.by_stage(stage) for s in j.slugs},
        )
        return index[section, slug]

    def find_unit(self, unit: str):
        """``(section, unit)`` of the gallery unit named by the unit string ``unit``, or None."""
        index = self.once(("units",), lambda: {u.unit: (s, u) for s in self.plan.sections for u in s.units})
        return index.get(unit)

    def crumbs(self, page: str, *trail: tuple[str, str]) -> tuple[Crumb, ...]:
        """Breadcrumbs from the index and the model page down to ``trail`` (pairs of site path and text)."""
        lay = self.layout
        steps = ((lay.index, GALLERY), (lay.model_page(), self.plan.model_name), *trail)
        return tuple(Crumb(lay.rel(page, path), text) for path, text in steps)

    def frame(self, page: str, title: str, crumbs: tuple[Crumb, ...], script: bool = False) -> Frame:
        """The frame of ``page``: its title, breadcrumbs and the addresses of the shared stylesheet and script."""
        lay = self.layout
        js = lay.rel(page, lay.static("gallery.js")) if script else None
        return Frame(title, __version__, lay.rel(page, lay.static("style.css")), crumbs, js)

    def page(self, path: str, template: str, title: str, crumb: str, **context) -> Page:
        """A stage's own page under the model page, titled ``title``, its last breadcrumb ``crumb``."""
        return Page(path, template, {"frame": self.frame(path, title, self.crumbs(path, (path, crumb))), **context})
