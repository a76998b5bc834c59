"""The examples stage: one pass over the image set for every section at once (``dataset_examples_many``): per
unit its top images with heatmaps and predicted classes, top patches, lower-quantile images and the histogram of
its activation over a uniform sample, with the best image and the visualization marked."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ...html import heat_image, image_bytes
from ...imagenet import class_name
from ...labels import MIN_COUNT, Concentration, class_concentration, class_counts
from ..site import EXAMPLE
from ..store import recipe_key
from .base import Job, Label, Panel, Record, Stage, UnitView
from .sae import load_sae


@dataclass(frozen=True)
class ExamplesTask:
    """Per section name, the key of its dataset examples in the store."""

    targets: dict[str, str]


@dataclass
class ExamplesRecord(Record):
    targets: dict[str, str]


@dataclass(frozen=True)
class Tile:
    """A dataset image (or patch) on a page: its link, the unit's value, and its heatmap and prediction."""

    src: str
    value: float
    heat: str | None = None
    pred: str | None = None
    q: float | None = None  # the quantile it stands for (lower-quantile images)


@dataclass(frozen=True)
class Bar:
    x: float
    w: float
    h: float
    y: float
    c: int
    lo: float
    hi: float


@dataclass(frozen=True)
class Mark:
    x: float
    v: float
    out: bool  # outside the histogram's range: drawn at its edge with the value written


@dataclass(frozen=True)
class Histogram:
    """Bars and markers of a histogram in SVG coordinates (drawn by the template)."""

    bars: tuple[Bar, ...]
    marks: tuple[Mark, ...]
    width: int
    height: int
    lo: float
    hi: float


@dataclass(frozen=True)
class ExamplesView(UnitView):
    examples: list[Tile]
    patches: list[Tile]
    quantiles: list[Tile]
    hist: Histogram
    best: float | None
    images_seen: int
    preds: list[tuple[str, int]]  # the top examples' most common predicted classes and their counts
    kind: str
    #: the top examples' majority class tested against the image set's class mix (None: no predictions), its
    #: name, and how many top examples were left out because an earlier one came from the same source photo
    evidence: Concentration | None = None
    evidence_class: str = ""
    repeats: int = 0

    def manifest(self) -> dict:
        return {
            "best": self.best,
            "top_examples": [e.value for e in self.examples],
            "examples_evidence": self.label_evidence(),
        }

    def grid(self) -> dict:
        return {"best": self.best}

    def label(self) -> Label | None:
        """The top examples' majority class, only when its concentration is unlikely under the image set's own
        class mix (class units need none: their name is one)."""
        ev = self.evidence
        if self.kind == "class" or ev is None or not ev.passes:
            return None
        return Label(f"sees {self.evidence_class} ({ev.count}/{ev.k}, p={ev.p_value:.2g})", 1)

    def label_evidence(self) -> dict | None:
        """The concentration test's numbers, for the manifest."""
        if self.evidence is None:
            return None
        return {"source": "examples", "name": self.evidence_class, **self.evidence.to_json(), "repeats": self.repeats}

    def label_note(self) -> str | None:
        """What the examples label rests on, or why the top examples give none (for the page)."""
        ev = self.evidence
        if ev is None or self.kind == "class":
            return None
        counted = f" (one example per source photo: {self.repeats} repeats left out)" if self.repeats else ""
        if ev.passes:
            return (
                f"from its top examples: {ev.count} of {ev.k} predicted {self.evidence_class} where the image set's "
                f"class mix expects {ev.expected:.1f} (p = {ev.p_value:.2g}){counted}"
            )
        why = "a single example" if ev.count < MIN_COUNT else "what chance gives"
        return (
            f"its top examples' most common class ({self.evidence_class}, {ev.count} of {ev.k}) is {why}: this "
            f"image set's class mix expects {ev.expected:.1f} (p = {ev.p_value:.2g}; a label needs "
            f"p ≤ {ev.alpha:g}){counted}"
        )


def histogram(counts: list[int], edges: list[float], marks: list[float], width=320, height=90) -> Histogram:
    """The histogram of ``counts`` over ``edges`` with ``marks`` (values) on it, in SVG coordinates."""
    top = max(counts) or 1
    lo, hi = edges[0], edges[-1]
    span = (hi - lo) or 1.0
    bw = width / max(1, len(counts))
    bars = tuple(
        Bar(
            round(i * bw, 2),
            round(bw - 1, 2),
            round(height * c / top, 2),
            round(height - height * c / top, 2),
            c,
            edges[i],
            edges[i + 1],
        )
        for i, c in enumerate(counts)
    )
    ticks = tuple(Mark(round(width * min(1.0, max(0.0, (m - lo) / span)), 2), m, not lo <= m <= hi) for m in marks)
    return Histogram(bars, ticks, width, height, lo, hi)


def examples_of(site, section):
    """The finished dataset examples of a section (read once)."""
    from ...examples import Examples

    job = site.plan.by_stage(STAGE.name)[0]
    folder = site.store.folder(STAGE.name, job.task.targets[section.name])
    return site.once((STAGE.name, section.name), lambda: Examples.load(folder))


def dataset_image(site, image_id: int, box: tuple[int, ...] | None = None) -> str:
    """The site path of a dataset image (or of a patch of it: ``box`` = top, left, height, width), written once."""

    def make() -> bytes:
        img = site.dataset[image_id]
        if box is not None:
            top, left, h, w = box
            img = img[:, top : top + h, left : left + w]
        return image_bytes(img, EXAMPLE, "WEBP")

    return site.writer.derived(site.layout.dataset_image(image_id, box), make)


def concentration_of(site, section, ex, ids: list[int]) -> dict:
    """The evidence fields of an :class:`ExamplesView`: the top examples' (``ids``) majority class tested against
    the image set's class mix (every image's prediction, counted once per section); a source photo counts once
    (its best crop), so that crops of one photo do not pass for a concentration."""
    labels = site.model.labels
    if labels is None or ex.pred_class is None:
        return {}
    mix = site.once((STAGE.name, "mix", section.name), lambda: class_counts(ex.pred_class))
    read = [(i, int(ex.pred_class[i])) for i in ids if 0 <= i < len(ex.pred_class) and int(ex.pred_class[i]) >= 0]
    photos, classes = set(), []
    for i, cls in read:
        src = ex.sources.get(i)
        photo = src.name if src is not None else f"#{i}"
        if photo not in photos:
            photos.add(photo)
            classes.append(cls)
    ev = class_concentration(classes, mix)
    repeats = len(read) - len(classes)
    return {"evidence": ev, "evidence_class": class_name(labels, ev.cls) if ev else "", "repeats": repeats}


class ExamplesStage(Stage):
    name = "examples"
    order = 30
    after = ("sae", "render")  # SAE latents are encoded; the histogram marks the visualization's activation
    record = ExamplesRecord
    unit_panels = (Panel("panels/examples.html", "sees", 10),)

    def plan(self, p) -> list[Job]:
        targets = {}
        for sec in p.sections:
            recipe = {
                **p.base,
                "layer": sec.layer,
                "tokens": sec.tokens,
                "sae": p.key_of("sae", sec.name),
                "k": p.spec.k,
                "distinct": p.spec.distinct,
                "images": p.images_key,
            }
            targets[sec.name] = recipe_key(recipe)
        return [Job(self.name, recipe_key(targets), task=ExamplesTask(targets))] if targets else []

    def cost(self, job: Job, plan, rates) -> float:
        return rates.forward * plan.spec.n_images * 1.3

    def run(self, job: Job, ctx) -> ExamplesRecord:
        from ...examples import Target, dataset_examples_many

        targets = {}
        for name, key in job.task.targets.items():
            sec = ctx.plan.section(name)
            sae = load_sae(ctx, sec.sae) if sec.sae else None
            targets[name] = Target(sec.layer, sae=sae, tokens=sec.tokens, cache=ctx.store.folder(self.name, key))
        spec = ctx.plan.spec
        dataset_examples_many(ctx.model, targets, ctx.dataset, k=spec.k, distinct=spec.distinct, progress=False)
        for key in job.task.targets.values():
            ctx.store.finish(self.name, key, {"target": key})
        return ExamplesRecord(job.task.targets)

    def unit_view(self, site, section, unit, views) -> ExamplesView:
        ex = examples_of(site, section)
        page = site.layout.unit_page(section.name, unit.slug)
        labels = site.model.labels

        def image(image_id: int, box=None) -> str:
            return site.layout.rel(page, dataset_image(site, image_id, box))

        def pred(image_id: int) -> str | None:
            if labels is None or ex.pred_class is None:
                return None
            cls, prob = ex.prediction(image_id)
            return f"{class_name(labels, cls)} {prob:.0%}"

        tops, patches = ex.top_images(unit.index), ex.top_patches(unit.index)
        best = tops[0]["value"] if tops else None
        vmax = max((p["value"] for p in patches), default=0.0)
        examples = []
        for j, t in enumerate(tops):
            heat = ex.heatmap(unit.index, j, "img")
            examples.append(
                Tile(image(t["id"]), t["value"], heat_image(heat, vmax) if heat.dim() == 2 else None, pred(t["id"]))
            )
        counts, edges = ex.histogram(unit.index)
        shown = views.get("render")
        marks = [m for m in (best, shown.held_out if shown else None) if m is not None]
        return ExamplesView(
            examples=examples,
            patches=[Tile(image(p["id"], p["box"]), p["value"]) for p in patches],
            quantiles=[Tile(image(q["id"]), q["value"], q=q["quantile"]) for q in ex.quantile_images(unit.index)],
            hist=histogram(counts, edges, marks),
            best=best,
            images_seen=ex.topk.images_seen,
            preds=Counter(e.pred.rsplit(" ", 1)[0] for e in examples if e.pred).most_common(3),
            kind=section.kind,
            **concentration_of(site, section, ex, [t["id"] for t in tops]),
        )


STAGE = ExamplesStage()
