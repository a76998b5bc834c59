"""The Jinja2 environment: templates from package folders, autoescape on for HTML and SVG, undefined names an
error. :func:`render_page` is the only place visfeat writes HTML; every page extends ``base.html``, whose frame
(title, breadcrumbs, stylesheet and script addresses) is a :class:`Frame`."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"  # base.html and the circuit page
STATIC = HERE / "static"  # style.css, gallery.js: copied beside the pages that use them


@dataclass(frozen=True)
class Crumb:
    """One breadcrumb: its link (relative to the page) and its text."""

    href: str
    text: str


@dataclass(frozen=True)
class Frame:
    """What ``base.html`` draws around every page: the window title, the breadcrumb trail, the version and the
    page-relative addresses of the stylesheet and (when the page has one) of the script."""

    title: str
    version: str
    css: str
    crumbs: tuple[Crumb, ...] = ()
    script: str | None = None
    scripts: tuple[str, ...] = field(default=())  # data scripts loaded before ``script`` (a layer's units.js)


@cache
def environment(*folders: str):
    """The environment reading templates from ``folders`` first (a client's own pages), then :data:`TEMPLATES`."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([*folders, str(TEMPLATES)]),
        autoescape=jinja2.select_autoescape(["html", "svg"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = lambda v, digits=3: "–" if v is None else f"{v:.{digits}g}"
    return env


def render_page(template: str, folders: tuple[str, ...] = (), **context) -> str:
    """One page (or SVG) from a template found in ``folders`` or the shared templates."""
    return environment(*folders).get_template(template).render(**context)
