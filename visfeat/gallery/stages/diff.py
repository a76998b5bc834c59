"""The diff stage of a diff gallery (a spec with ``[base]``): per section, how much each unit changed from the base
model (:func:`visfeat.diff.diff_layers`: activation over the image set, and weights), and three pictures per unit
rendered together through the two models side by side (:func:`visfeat.diff.pair_model`): what the unit wants in the
changed model, in the base model, and the diff visualization (changed − base); and the photos the unit sees most in
the base model, beside the changed model's (the examples stage's). The unit page shows them side by side; the grid
sorts by the change; a "changed most" page and the index list the units that changed most."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..store import recipe_key
from .base import Group, Job, Link, Panel, Record, Stage, UnitView
from .examples import Tile, dataset_image

KIND = "diff"
TOP = 8  # units per layer on the "changed most" page and in the layer page's header
SHOWN = ("changed", "base", "diff")  # the three pictures per unit, in this order
UNCHANGED = 1e-3  # a change this small (of the spread, or of the weights' norm) is not listed as a change


@dataclass
class DiffRecord(Record):
    """Per unit slug its change (``LayerDiff.unit`` plus its rank among all the layer's units by each measure, and
    ``base_top``: the base model's top images as [id, value]), the layer's most changed units (all of them, not only
    the gallery's) and the image count."""

    units: dict[str, dict]
    top: list[dict]
    top_weight: list[dict]
    units_in_layer: int
    images: int


@dataclass(frozen=True)
class DiffView(UnitView):
    activation_change: float | None
    weight_change: float | None
    base_mean: float | None
    changed_mean: float | None
    rank: int
    rank_weight: int
    of: int
    pictures: tuple[tuple[str, str], ...]  # (caption, page-relative link)
    thumb: str  # the diff picture's, relative to the layer page
    base_name: str
    sees: tuple[tuple[str, tuple], ...] = ()  # (which model, its top images as examples.Tile), changed first

    def manifest(self) -> dict:
        return {
            "change": {
                "activation": self.activation_change,
                "weight": self.weight_change,
                "base_mean": self.base_mean,
                "changed_mean": self.changed_mean,
                "rank": self.rank,
                "rank_weight": self.rank_weight,
                "of": self.of,
            }
        }

    def grid(self) -> dict:
        return {"change": self.activation_change}


@dataclass(frozen=True)
class Changed:
    """One of a layer's most changed units: its text, its change, and its page and diff picture when in the
    gallery."""

    text: str
    activation: float | None
    weight: float | None
    href: str | None
    thumb: str | None


@dataclass(frozen=True)
class ChangedSection:
    name: str
    href: str
    units_in_layer: int
    top: tuple[Changed, ...]
    top_weight: tuple[Changed, ...]


@dataclass(frozen=True)
class ChangedView:
    """The "changed most" summary (the page, the index and the layer pages draw it)."""

    base: str
    changed: str
    images: int
    sections: tuple[ChangedSection, ...]
    page: str | None  # the full page, from where the view is drawn


def base_recipe(spec) -> dict:
    """What identifies the base model without loading it: its name, weights file (with size and time) and flag."""
    b = spec.base
    stamp = None
    if b.weights and Path(b.weights).is_file():
        st = Path(b.weights).stat()
        stamp = (st.st_size, st.st_mtime_ns)
    return {"name": b.name, "weights": b.weights, "stamp": stamp, "pretrained": b.pretrained}


def shown_name(name: str, weights: str | None) -> str:
    """A model as pages name it: its name, and its weights file when one was given."""
    return name + (f" ({Path(weights).name})" if weights else "")


def load_base(ctx):
    """The spec's base model on the gallery model's device, loaded once per process."""
    from ...models import load_model

    b = ctx.plan.spec.base
    return ctx.once(
        ("base",), lambda: load_model(b.name, weights=b.weights, pretrained=b.pretrained, device=ctx.model.device)
    )


class DiffStage(Stage):
    name = "diff"
    order = 35
    after = ("render", "examples")
    record = DiffRecord
    unit_panels = (Panel("panels/diff.html", "wants", 15),)
    section_panels = (Panel("panels/diff_summary.html"),)
    index_panels = (Panel("panels/diff_summary.html"),)
    sorts = (("change", "change from the base model"),)

    def check(self, spec, model) -> None:
        """The base must load and have the model's architecture: refused before any work."""
        if spec.base is None:
            return
        from ...diff import check_same_architecture
        from ...errors import VisfeatError
        from ...models import load_model
        from ..spec import spec_error

        b = spec.base
        try:
            check_same_architecture(model, load_model(b.name, weights=b.weights, pretrained=b.pretrained))
        except VisfeatError as e:
            raise spec_error(spec, ("base",), str(e)) from e

    def plan(self, p) -> list[Job]:
        if p.spec.base is None:
            return []
        jobs = []
        for sec in p.sections:
            if sec.kind == "latent":  # an SAE is trained on one model: its latents have no twin in the other
                continue
            r = sec.settings
            recipe = {**p.base, "diff_base": base_recipe(p.spec), "units": [u.unit for u in sec.units]}
            recipe |= {"settings": r.recipe(), "layer": sec.layer, "kind": KIND, "base_top": p.spec.k}
            jobs.append(Job(self.name, recipe_key(recipe), sec.name, tuple(u.slug for u in sec.units), r.seed))
        return jobs

    def cost(self, job: Job, plan, rates) -> float:
        r = plan.section(job.section).settings
        render = rates.image_step(job.section) * len(job.slugs) * r.steps * r.views * len(SHOWN) * 2  # two models
        return render + rates.forward * 3 * plan.spec.n_images  # the diff's two passes, the base's examples

    def run(self, job: Job, ctx) -> DiffRecord:
        from ...diff import diff_layers, pair_model, side
        from ...examples import dataset_examples
        from ...images import save_image
        from ...render import default_param, render
        from .render import objectives_for

        sec = ctx.plan.section(job.section)
        r = sec.settings
        base = load_base(ctx)
        d = diff_layers(ctx.model, base, [sec.layer], ctx.dataset, progress=False)[sec.layer]
        rank = {c: i + 1 for i, c in enumerate(d.ranked("activation"))}
        rank_w = {c: i + 1 for i, c in enumerate(d.ranked("weight"))}
        units = {u.slug: d.unit(u.index) | {"rank": rank[u.index], "rank_weight": rank_w[u.index]} for u in sec.units}
        spec = ctx.plan.spec
        seen = dataset_examples(
            base, sec.layer, ctx.dataset, k=spec.k, tokens=sec.tokens, distinct=spec.distinct, progress=False
        )
        for u in sec.units:
            units[u.slug]["base_top"] = [[t["id"], t["value"]] for t in seen.top_images(u.index)]
        pair = pair_model(ctx.model, base)
        opt, _ = objectives_for(ctx, sec, sec.units)
        folder = ctx.store.folder(self.name, job.key)
        per_call = max(1, (r.batch_size if isinstance(r.batch_size, int) else 32) // len(SHOWN))
        common = dict(steps=r.steps, lr=r.lr, lr_schedule=r.lr_schedule, settle=r.settle, views=r.views, amp=r.amp)
        rate = ctx.rates.image_step(sec.name) * 2
        for start in range(0, len(sec.units), per_call):
            chunk = list(zip(sec.units[start : start + per_call], opt[start : start + per_call], strict=True))
            objs = []
            for _, o in chunk:
                changed, before = side(o, ctx.model, "changed"), side(o, ctx.model, "base")
                objs += [changed, before, changed - before]
            images = len(objs)
            tick = False if ctx.tick is None else (lambda n, k=images: ctx.tick(n * k * r.views * rate))
            param = default_param(ctx.model, [o for _, o in chunk], r.steps)
            out = render(pair, objs, param=param, seed=job.seed + start, progress=tick, **common)
            for i, (u, _) in enumerate(chunk):
                for j, what in enumerate(SHOWN):
                    save_image(out.images[len(SHOWN) * i + j], folder / f"{u.slug}_{what}.png")
        top = [d.unit(c) for c in d.ranked("activation")[:TOP]]
        top_w = [d.unit(c) for c in d.ranked("weight")[:TOP]]
        return DiffRecord(units, top, top_w, len(d.activation), d.images)

    def unit_view(self, site, section, unit, views) -> DiffView | None:
        try:
            job = site.job_of(self.name, section.name, unit.slug)
        except KeyError:
            return None
        rec, lay = site.record(job), site.layout
        page = lay.unit_page(section.name, unit.slug)
        files = {}
        for what in SHOWN:
            data = site.store.file(self.name, job.key, f"{unit.slug}_{what}.png").read_bytes()
            files[what] = site.writer.bytes(lay.unit_asset(section.name, unit.slug, f"_{what}.png"), data)
        u = rec.units[unit.slug]
        base = site.plan.spec.base
        base_name = shown_name(base.name, base.weights)
        captions = {"changed": "changed model", "base": "base model", "diff": "changed − base"}
        sees = []
        if "examples" in views:  # the changed model's top photos (the Sees panel's) beside the base model's
            sees.append(("changed model", tuple(views["examples"].examples)))
        sees.append(("base model", tuple(Tile(lay.rel(page, dataset_image(site, i)), v) for i, v in u["base_top"])))
        return DiffView(
            u["activation_change"],
            u["weight_change"],
            u["base_mean"],
            u["changed_mean"],
            u["rank"],
            u["rank_weight"],
            rec.units_in_layer,
            tuple((captions[w], lay.rel(page, files[w])) for w in SHOWN),
            lay.rel(lay.section_page(section.name), files["diff"]),
            base_name,
            tuple(sees),
        )

    def _summary(self, site, page: str, full: str | None) -> ChangedView | None:
        jobs = site.plan.by_stage(self.name)
        if not jobs:
            return None
        lay, sections = site.layout, []
        for job in jobs:
            sec = site.plan.section(job.section)
            rec = site.record(job)
            by_index = {u.index: u for u in sec.units}

            def entry(row: dict, sec=sec, by_index=by_index) -> Changed:
                u, c = by_index.get(row["unit"]), row["unit"]
                labels = site.model.labels
                text = f"{sec.layer}:{c}" if sec.kind != "class" else (labels[c] if labels else f"class {c}")
                text = u.name if u is not None else text
                href = thumb = None
                if u is not None:
                    href = lay.rel(page, lay.unit_page(sec.name, u.slug))
                    thumb = lay.rel(page, lay.unit_asset(sec.name, u.slug, "_diff.png"))
                return Changed(text, row["activation_change"], row["weight_change"], href, thumb)

            sections.append(
                ChangedSection(
                    sec.name,
                    lay.rel(page, lay.section_page(sec.name)),
                    rec.units_in_layer,
                    tuple(entry(r) for r in rec.top if (r["activation_change"] or 0) > UNCHANGED),
                    tuple(entry(r) for r in rec.top_weight if (r["weight_change"] or 0) > UNCHANGED),
                )
            )
        base = site.plan.spec.base
        images = site.record(jobs[0]).images
        changed = shown_name(site.plan.model_name, site.plan.spec.weights)
        return ChangedView(shown_name(base.name, base.weights), changed, images, tuple(sections), full)

    def section_view(self, site, section) -> ChangedView | None:
        view = self._summary(site, site.layout.section_page(section.name), site.layout.page(KIND, "changed-most"))
        if view is None:
            return None
        page = site.layout.section_page(section.name)
        mine = tuple(s for s in view.sections if s.name == section.name)
        full = site.layout.rel(page, site.layout.page(KIND, "changed-most"))
        return ChangedView(view.base, view.changed, view.images, mine, full) if mine else None

    def index_view(self, site) -> ChangedView | None:
        lay = site.layout
        return self._summary(site, lay.index, lay.rel(lay.index, lay.page(KIND, "changed-most")))

    def pages(self, site) -> list:
        path = site.layout.page(KIND, "changed-most")
        view = self._summary(site, path, None)
        if view is None:
            return []
        return [site.page(path, "diff.html", "changed most", "changed most", v=view)]

    def groups(self, site) -> list[Group]:
        if not site.plan.by_stage(self.name):
            return []
        lay = site.layout
        link = Link(lay.rel(lay.model_page(), lay.page(KIND, "changed-most")), "the units that changed most")
        return [Group("What changed from the base model", (link,), "diff")]

    def manifest(self, site) -> dict:
        base = site.plan.spec.base
        if base is None:
            return {}
        return {"base": {"model": base.name, "weights": base.weights}}


STAGE = DiffStage()
