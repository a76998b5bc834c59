"""The weights stage: expanded weights (``circuits.expand``) of each channel or latent section's units from the
previous built layer, into the next one (latents) and, for the last built layer, to every class. A unit page shows
the strongest excitatory and inhibitory units each way with their kernels, and the classes a unit promotes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ...hooks import LOGITS
from ...html import kernel_image
from ...imagenet import class_name
from ...images import atomic_write
from ...labels import WeightShare, weight_share
from ..store import recipe_key
from .base import Job, Label, Panel, Record, Stage, UnitView
from .sae import load_sae

TOP_LINKS = 4  # excitatory and inhibitory neighbours shown per direction
TOKEN_WEIGHTS = (
    "not computed for token layers: expanded weights need a path of linear ops, and attention's softmax mixes "
    "tokens nonlinearly"
)
FILE = "weights.safetensors"


@dataclass
class WeightsRecord(Record):
    """Which sections the weights connect and how they were computed (exact or linearized), or why not."""

    prev: str | None
    next: str | None
    last: bool
    from_mode: str | None = None
    feeds_mode: str | None = None
    classes_mode: str | None = None
    prev_error: str | None = None
    next_error: str | None = None
    classes_error: str | None = None


@dataclass(frozen=True)
class Neighbour:
    """A linked unit: its page, thumbnail, summed weight and kernel picture."""

    name: str
    href: str
    thumb: str
    weight: float
    kernel: str | None


@dataclass(frozen=True)
class Neighbours:
    excite: list[Neighbour]
    inhibit: list[Neighbour]


@dataclass(frozen=True)
class ClassWeight:
    name: str
    weight: float


@dataclass(frozen=True)
class Classes:
    promote: list[ClassWeight]
    inhibit: list[ClassWeight]


@dataclass(frozen=True)
class BuiltView(UnitView):
    from_title: str
    from_links: Neighbours | None
    from_empty: str
    feeds_title: str
    feeds: Neighbours | None
    feeds_empty: str
    classes: Classes | None
    #: the top promoted class's share of the unit's positive class weight and its margin over the next (None:
    #: no weights to the classes), and the names of the top and the next class
    share: WeightShare | None = None
    share_class: str = ""
    next_class: str = ""

    def manifest(self) -> dict:
        return {"weights_evidence": self.label_evidence()} if self.share is not None else {}

    def label(self) -> Label | None:
        """The class the unit promotes most through its weights to the logits (the model's own evidence, stronger
        than the top examples'), only when it stands out from the next class."""
        if self.share is None or not self.share.passes:
            return None
        return Label(f"promotes {self.share_class} (share {percent(self.share.share)})", 2)

    def label_evidence(self) -> dict | None:
        """The share test's numbers, for the manifest."""
        if self.share is None:
            return None
        return {"source": "weights", "name": self.share_class, "next": self.next_class, **self.share.to_json()}

    def label_note(self) -> str | None:
        """What the weights label rests on, or why the weights give none (for the page)."""
        s = self.share
        if s is None:
            return None
        share = f"{percent(s.share)} of its positive class weight"
        if s.passes:
            over = (
                "the only class it promotes" if math.isinf(s.margin) else f"{s.margin:.2f}x the next, {self.next_class}"
            )
            return f"from its weights: promotes {self.share_class} ({share}, {over})"
        return (
            f"its weights promote {self.share_class} most, with {share}, but only {s.margin:.2f}x the next class "
            f"({self.next_class}): it spreads its weight over many classes (a label needs {s.threshold:g}x)"
        )


def percent(x: float) -> str:
    """A share as a percentage with two significant digits below 10%: 100%, 12%, 1.5%, 0.31%."""
    return f"{100 * x:.0f}%" if x >= 0.1 else f"{100 * x:.2g}%"


def neighbours(plan, model, section) -> tuple:
    """The built channel sections just before and after ``section`` in depth order, and whether it is the
    last one before the logits (so its weights to the classes are shown)."""
    depth = {n: i for i, n in enumerate(model.layers)}
    chans = sorted((s for s in plan.sections if s.kind == "channel"), key=lambda s: depth[s.layer])
    here = depth[section.layer]
    before = [s for s in chans if depth[s.layer] < here]
    after = [s for s in chans if depth[s.layer] > here]
    last = not after and section.kind in ("channel", "latent")
    return (before[-1] if before else None), (after[0] if after else None), last


def _expand(model, source: str, target: str, **kw):
    from ...circuits import CircuitError, expand

    try:
        return expand(model, source, target, **kw)
    except CircuitError as e:
        return str(e)


def _links(site, weights: torch.Tensor, section, page: str) -> Neighbours:
    """Strongest excitatory and inhibitory units from ``weights [n, kh, kw]`` (one kernel per unit of ``section``)."""
    totals = weights.flatten(1).sum(1) if weights.dim() > 1 else weights
    scale = float(weights.abs().max()) or 1.0
    order = totals.argsort(descending=True).tolist()
    lay = site.layout

    def link(i: int) -> Neighbour:
        u = section.units[i]
        href = lay.rel(page, lay.unit_page(section.name, u.slug))
        thumb = lay.rel(page, lay.thumbnail(section.name, u.slug))
        kernel = kernel_image(weights[i], scale) if weights.dim() == 3 else None
        return Neighbour(u.name, href, thumb, float(totals[i]), kernel)

    excite = [link(i) for i in [i for i in order if totals[i] > 0][:TOP_LINKS]]
    inhibit = [link(i) for i in [i for i in reversed(order) if totals[i] < 0][:TOP_LINKS]]
    return Neighbours(excite, inhibit)


def _classes(w: torch.Tensor, labels, n: int = 5) -> Classes:
    """Classes a unit promotes and inhibits most, from its summed expanded weights to the logits [classes]."""
    top, bottom = w.topk(min(n, len(w))), (-w).topk(min(n, len(w)))
    pairs = zip(top.values, top.indices, strict=True)
    promote = [ClassWeight(class_name(labels, int(i)), float(v)) for v, i in pairs if v > 0]
    pairs = zip(bottom.values, bottom.indices, strict=True)
    inhibit = [ClassWeight(class_name(labels, int(i)), -float(v)) for v, i in pairs if v > 0]
    return Classes(promote, inhibit)


def _share_fields(share: WeightShare | None, w: torch.Tensor | None, labels) -> dict:
    """The share fields of a :class:`BuiltView`: the test and the names of the top and the next class."""
    if share is None or w is None:
        return {}
    second = int(w.topk(min(2, len(w))).indices[-1])
    return {"share": share, "share_class": class_name(labels, share.cls), "next_class": class_name(labels, second)}


class WeightsStage(Stage):
    name = "weights"
    order = 40
    after = ("sae",)
    record = WeightsRecord
    unit_panels = (Panel("panels/weights.html", "built", 10),)

    def plan(self, p) -> list[Job]:
        order = [[s.name, s.layer, [u.index for u in s.units]] for s in p.sections]  # what a section's neighbours are
        jobs = []
        for sec in p.sections:
            if sec.kind in ("channel", "latent"):
                recipe = {**p.base, "weights": sec.name, "order": order, "sae": p.key_of("sae", sec.name)}
                jobs.append(Job(self.name, recipe_key(recipe), sec.name))
        return jobs

    def cost(self, job: Job, plan, rates) -> float:
        return 2.0

    def run(self, job: Job, ctx) -> WeightsRecord:
        """Expanded weights of a section's units from the previous built layer, to the next one (latents only:
        channel sections get theirs from the next section's job) and, for the last layer, to every class."""
        from safetensors.torch import save

        sec = ctx.plan.section(job.section)
        model = ctx.model
        prev, nxt, last = neighbours(ctx.plan, model, sec)
        tensors = {}
        rec = WeightsRecord(prev.name if prev else None, nxt.name if nxt else None, last)
        latents = None
        if sec.kind == "latent":
            from ...circuits import Latents

            latents = Latents.from_sae(load_sae(ctx, sec.sae), layer=sec.layer, name=sec.sae)
        if prev is not None and prev.layer != sec.layer:
            idx = [u.index for u in sec.units]
            kw = {"directions": latents.encoder[idx]} if latents is not None else {"channels": idx}
            e = _expand(model, prev.layer, sec.layer, **kw)
            if isinstance(e, str):
                rec.prev_error = e
            else:
                tensors["from"], rec.from_mode = e.weights.float().contiguous(), e.mode
        if latents is not None and nxt is not None:
            e = _expand(model, sec.layer, nxt.layer, channels=[u.index for u in nxt.units])
            if isinstance(e, str):
                rec.next_error = e
            else:  # [next units, C, kh, kw] onto each latent's decoder direction -> [next units, latents, kh, kw]
                dec = latents.decoder[[u.index for u in sec.units]].to(e.weights)
                tensors["feeds"] = torch.einsum("nckl,jc->njkl", e.weights.float(), dec).contiguous()
                rec.feeds_mode = e.mode
        if last:
            n = model.layer(LOGITS).channels
            e = _expand(model, sec.layer, LOGITS, channels=list(range(n)))
            if isinstance(e, str):
                rec.classes_error = e
            else:
                w = e.weights.float().flatten(2).sum(2)  # [classes, C]
                if latents is not None:
                    w = w @ latents.decoder[[u.index for u in sec.units]].T.to(w)
                else:
                    w = w[:, [u.index for u in sec.units]]
                tensors["classes"], rec.classes_mode = w.contiguous(), e.mode
        folder = ctx.store.folder(self.name, job.key)
        atomic_write(folder / FILE, save(tensors) if tensors else save({"none": torch.zeros(1)}))
        return rec

    def _tensors(self, site, section) -> dict:
        """The stored weight tensors of ``section`` (empty when it has no weights job), read once."""
        from safetensors.torch import load_file

        job = next((j for j in site.plan.by_stage(self.name) if j.section == section.name), None)
        if job is None:
            return {}
        return site.once((self.name, section.name), lambda: load_file(str(site.store.file(self.name, job.key, FILE))))

    def _record(self, site, section) -> WeightsRecord | None:
        job = next((j for j in site.plan.by_stage(self.name) if j.section == section.name), None)
        return site.record(job) if job is not None else None

    def unit_view(self, site, section, unit, views) -> BuiltView:
        plan, model = site.plan, site.model
        page = site.layout.unit_page(section.name, unit.slug)
        pos = section.units.index(unit)
        rec = self._record(site, section)
        mine = self._tensors(site, section)
        error = TOKEN_WEIGHTS if section.kind == "token" else (rec and (rec.prev_error or rec.next_error)) or None
        prev, nxt = neighbours(plan, model, section)[:2] if section.kind != "class" else (None, None)
        from_links = feeds = classes = None
        if "from" in mine and prev is not None:
            from_links = _links(site, mine["from"][pos][[x.index for x in prev.units]], prev, page)
        if nxt is not None:  # a channel's feeds are the next section's weights from this layer; latents store theirs
            column = self._tensors(site, nxt).get("from") if section.kind == "channel" else mine.get("feeds")
            if column is not None:
                feeds = _links(site, column[:, pos if section.kind == "latent" else unit.index], nxt, page)
        share = None
        if "classes" in mine and model.labels is not None:
            classes = _classes(mine["classes"][:, pos], model.labels)
            share = weight_share(mine["classes"][:, pos])
        if section.kind == "class":  # class logits are built from the last built layer: its weights to each class
            last = next((s for s in plan.sections if s.kind == "channel" and neighbours(plan, model, s)[2]), None)
            c = self._tensors(site, last).get("classes") if last else None
            if c is not None:
                prev, from_links = last, _links(site, c[unit.index], last, page)
        from_title = f"from {prev.name} (its units in this gallery)" if prev else ""
        feeds_title = f"feeds {nxt.name} (its units in this gallery)" if nxt else ""
        return BuiltView(
            from_title=from_title,
            from_links=from_links,
            from_empty=error or "no earlier layer in this gallery",
            feeds_title=feeds_title,
            feeds=feeds,
            feeds_empty=error or "no weights",
            classes=classes,
            **_share_fields(share, mine["classes"][:, pos] if share is not None else None, model.labels),
        )


STAGE = WeightsStage()
