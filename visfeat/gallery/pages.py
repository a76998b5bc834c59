"""The site's pages from a finished build: every stage's view of every unit, gathered into the unit pages (their
panels stand in the unit page's columns), the layer grids, the model page, the index, the stages' own pages and
``manifest.json``, all written through the templates of :mod:`visfeat.html` and ``gallery/templates``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..html import STATIC, render_page
from ..version import __version__
from .layout import SiteLayout
from .sections import GUnit, Section
from .site import Page, Site
from .stages.base import COLUMNS, Group, Panel
from .writer import SiteWriter

TEMPLATES = str(Path(__file__).parent / "templates")
SAMPLES = 8  # units of each layer shown on the model page
#: The order of a unit's fields in ``manifest.json`` and of a grid row in ``units.js`` (fields a stage adds that
#: are not listed follow in stage order), and of the manifest's top-level fields.
UNIT_FIELDS = (
    "unit",
    "name",
    "label",
    "index",
    "held_out",
    "best",
    "ratio",
    "path_similarity",
    "flags",
    "final",
    "negative",
    "seed",
    "command",
)
GRID_FIELDS = ("slug", "name", "label", "ratio", "path", "held_out", "best", "index", "thumb", "flag", "flags")
TOP_FIELDS = ("title", "visfeat", "model", "fingerprint", "images", "sections", "circuits", "saes")


@dataclass(frozen=True)
class PanelView:
    """A stage's panel on a page and the view it draws (``p.v`` in the panel's template)."""

    template: str
    v: object


@dataclass(frozen=True)
class Column:
    """One column of a unit page: its heading and its panels, in order."""

    name: str
    title: str
    note: str
    panels: tuple[PanelView, ...]


@dataclass
class UnitPage:
    """A unit: its name and label, its page and its neighbours' pages, and every stage's view of it."""

    unit: GUnit
    section: Section
    path: str
    label: str
    views: dict[str, object]
    prev: str | None = None
    next: str | None = None
    columns: tuple[Column, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.unit.name

    @property
    def warnings(self) -> list[str]:
        """The views' one-line warnings, for the top of the page."""
        return [w for v in self.views.values() if (w := v.warning())]


@dataclass(frozen=True)
class Tile:
    """A unit on the model page or in a layer page's list: its page, thumbnail, name and label."""

    href: str
    thumb: str
    name: str
    label: str


@dataclass(frozen=True)
class SectionLink:
    """A section as the index and the model page list it."""

    section: Section
    href: str
    samples: tuple[Tile, ...]


@dataclass(frozen=True)
class ModelCard:
    """The index's card of the model: its page, a cover of thumbnails, what was built, and the spec."""

    name: str
    href: str
    fingerprint: str
    cover: tuple[str, ...]
    units: int
    sections: tuple[SectionLink, ...]
    groups: tuple[Group, ...]
    manifest: str
    spec_text: str


def _ordered(fields: dict, order: tuple[str, ...]) -> dict:
    """``fields`` with the keys of ``order`` first, in that order, then the others as they came."""
    return {**{k: fields[k] for k in order if k in fields}, **{k: v for k, v in fields.items() if k not in order}}


def _unit_pages(site: Site) -> dict[str, list[UnitPage]]:
    """Every unit's views, stage by stage (a stage sees the views of the stages before it), and its label: the one
    with the strongest evidence."""
    out: dict[str, list[UnitPage]] = {}
    for sec in site.plan.sections:
        pages = []
        for u in sec.units:
            views: dict[str, object] = {}
            for stage in site.plan.stages:
                view = stage.unit_view(site, sec, u, views)
                if view is not None:
                    views[stage.name] = view
            labels = [lab for v in views.values() if (lab := v.label()) is not None]
            label = max(labels, key=lambda lab: lab.strength).text if labels else ""
            pages.append(UnitPage(u, sec, site.layout.unit_page(sec.name, u.slug), label, views))
        lay = site.layout
        for i, p in enumerate(pages):
            p.prev = lay.rel(p.path, pages[i - 1].path) if i > 0 else None
            p.next = lay.rel(p.path, pages[i + 1].path) if i + 1 < len(pages) else None
            p.columns = _columns(site.plan.stages, p.views)
        out[sec.name] = pages
    return out


def _columns(stages, views: dict) -> tuple[Column, ...]:
    """The unit page's columns, each with the panels of the stages that have a view of the unit."""
    placed: list[tuple[Panel, object]] = [
        (panel, views[s.name]) for s in stages if s.name in views for panel in s.unit_panels
    ]
    out = []
    for name, title, note in COLUMNS:
        mine = sorted((pv for pv in placed if pv[0].column == name), key=lambda pv: pv[0].order)
        if mine:
            out.append(Column(name, title, note, tuple(PanelView(p.template, v) for p, v in mine)))
    return tuple(out)


def _tile(lay: SiteLayout, page: str, p: UnitPage) -> Tile:
    return Tile(lay.rel(page, p.path), lay.rel(page, lay.thumbnail(p.section.name, p.unit.slug)), p.name, p.label)


def _grid_row(lay: SiteLayout, p: UnitPage) -> dict:
    row = {"slug": p.unit.slug, "name": p.name, "label": p.label, "index": p.unit.index}
    for v in p.views.values():
        row |= v.grid()
    return _ordered(row, GRID_FIELDS)


def _manifest_unit(p: UnitPage) -> dict:
    entry = {"unit": p.unit.unit, "name": p.name, "label": p.label, "index": p.unit.index}
    for v in p.views.values():
        entry |= v.manifest()
    return _ordered(entry, UNIT_FIELDS)


def units_js(section: str, rows: list[dict]) -> bytes:
    """The per-layer data script: ``VF_UNITS`` for the grid (filter, sort); ``<`` escaped for safety."""
    blob = json.dumps({"section": section, "units": rows}, separators=(",", ":")).replace("<", "\\u003c")
    return f"window.VF_UNITS = {blob};\n".encode()


def _layer_pages(site: Site, units: dict[str, list[UnitPage]]) -> list[Page]:
    lay, out = site.layout, []
    for sec in site.plan.sections:
        path = lay.section_page(sec.name)
        pages = units[sec.name]
        rows = [_grid_row(lay, p) for p in pages]
        data = site.writer.bytes(lay.section_data(sec.name), units_js(sec.name, rows))
        sorts = [(k, text) for stage in site.plan.stages for k, text in stage.sorts if any(k in r for r in rows)]
        panels = []
        for stage in site.plan.stages:
            view = stage.section_view(site, sec) if stage.section_panels else None
            if view is not None:
                panels += [PanelView(panel.template, view) for panel in stage.section_panels]
        frame = site.frame(path, sec.name, site.crumbs(path, (path, sec.name)), script=True)
        tiles = [_tile(lay, path, p) for p in pages]
        context = {"frame": frame, "section": sec, "units": tiles, "panels": panels, "data": lay.rel(path, data)}
        context["sorts"] = sorts
        out.append(Page(path, "layer.html", context))
        for p in pages:
            crumbs = site.crumbs(p.path, (path, sec.name), (p.path, p.name))
            frame = site.frame(p.path, p.name, crumbs, script=True)
            out.append(Page(p.path, "unit.html", {"frame": frame, "u": p, "grid": lay.rel(p.path, path)}))
    return out


def _manifest(site: Site, units: dict[str, list[UnitPage]]) -> dict:
    """The bulk export: every unit with its files, metrics and the recipe that made it."""
    plan = site.plan
    sections = [
        {
            "name": sec.name,
            "layer": sec.layer,
            "kind": sec.kind,
            "units": [_manifest_unit(p) for p in units[sec.name]],
            "render": sec.settings.recipe(),
            "sae": sec.sae,
        }
        for sec in plan.sections
    ]
    top = {
        "title": plan.spec.title,
        "visfeat": __version__,
        "model": plan.model_name,
        "fingerprint": plan.fingerprint,
        "images": {"folder": plan.spec.images, "n": plan.spec.n_images, "k": plan.spec.k},
        "sections": sections,
    }
    for stage in plan.stages:
        top |= stage.manifest(site)
    return _ordered(top, TOP_FIELDS)


def write_site(ctx, out: Path) -> dict:
    """Write every page, image, script and the manifest of a finished build (``ctx``: its
    :class:`~visfeat.gallery.context.RunContext`); returns the manifest and what was written."""
    plan = ctx.plan
    lay = SiteLayout(plan.slug, plan.images_key)
    site = Site(plan, ctx.model, ctx.store, ctx.dataset, lay, SiteWriter(out))
    w = site.writer
    for f in sorted(STATIC.iterdir()):
        w.bytes(lay.static(f.name), f.read_bytes())
    units = _unit_pages(site)
    pages = _layer_pages(site, units)
    groups: list[Group] = []
    for stage in plan.stages:
        pages += stage.pages(site)
        groups += stage.groups(site)
    model_page = lay.model_page()
    links = [
        SectionLink(
            sec,
            lay.rel(model_page, lay.section_page(sec.name)),
            tuple(_tile(lay, model_page, p) for p in units[sec.name][:SAMPLES]),
        )
        for sec in plan.sections
    ]
    frame = site.frame(model_page, plan.model_name, site.crumbs(model_page))
    pages.append(Page(model_page, "model.html", {"frame": frame, "sections": links, "groups": groups}))
    manifest = _manifest(site, units)
    w.bytes(lay.manifest, (json.dumps(manifest, indent=1, sort_keys=False) + "\n").encode())
    w.text(lay.spec, plan.spec.text)
    thumbs = [lay.thumbnail(sec.name, units[sec.name][0].unit.slug) for sec in plan.sections if units[sec.name]]
    card = ModelCard(
        name=plan.model_name,
        href=lay.rel(lay.index, model_page),
        fingerprint=plan.fingerprint[:12],
        cover=tuple(lay.rel(lay.index, t) for t in thumbs[:6]),
        units=sum(len(v) for v in units.values()),
        sections=tuple(SectionLink(s, lay.rel(lay.index, lay.section_page(s.name)), ()) for s in plan.sections),
        groups=tuple(groups),
        manifest=lay.rel(lay.index, lay.manifest),
        spec_text=plan.spec.text,
    )
    index = {"frame": site.frame(lay.index, plan.spec.title, site.crumbs(lay.index)[:1]), "card": card}
    index["panels"] = [
        PanelView(panel.template, view)
        for stage in plan.stages
        if stage.index_panels and (view := stage.index_view(site)) is not None
        for panel in stage.index_panels
    ]
    pages.append(Page(lay.index, "index.html", index))
    folders = (TEMPLATES, *(s.templates for s in plan.stages if s.templates))
    for page in pages:
        w.text(page.path, render_page(page.template, folders, **page.context))
    w.remove_stale(lay.is_kept)
    return {"manifest": manifest, "written": w.written, "files": len(w.kept)}


__all__ = ["write_site"]
