"""The path stage: does each unit's picture reach the unit along the path its top natural examples take
(:mod:`visfeat.path_similarity`)? One job per section, after the pictures and the examples exist; a unit whose
picture takes another path is flagged (``different-path``) on its page, in the layer grid and in the manifest."""

from __future__ import annotations

from dataclasses import dataclass

from ...hooks import LOGITS
from ..store import recipe_key
from .base import Job, Record, Stage, UnitView

#: Bumped when the method changes, so stored checks are recomputed.
METHOD = "activation x gradient, cosine to the top examples' centroid, min over layers of cos / natural median; v1"


@dataclass
class PathsRecord(Record):
    """Per unit slug its check (``PathCheck.to_json``) and the threshold it was judged by."""

    units: dict[str, dict]
    threshold: float


@dataclass(frozen=True)
class PathsView(UnitView):
    layers: tuple[str, ...]
    per_layer: tuple[float, ...]
    calibration: tuple[float, ...]
    relative: tuple[float, ...]
    score: float | None
    threshold: float
    flagged: bool
    min_calibration: float  # below it a layer is not judged (the photos disagree)

    def manifest(self) -> dict:
        return {
            "path_similarity": self.score,
            "path": {
                "layers": list(self.layers),
                "cosine": list(self.per_layer),
                "natural": list(self.calibration),
                "threshold": self.threshold,
            },
        }

    def grid(self) -> dict:
        return {"path": self.score}


def _examples_key(p, section: str) -> str | None:
    """The store key of a section's dataset examples in a plan (or planning) ``p``."""
    job = next((j for j in p.jobs if j.stage == "examples"), None)
    return job.task.targets.get(section) if job is not None else None


class PathsStage(Stage):
    name = "paths"
    order = 40
    after = ("render", "examples")
    record = PathsRecord
    # no panel of its own: the trust panel shows the check with the other signals

    def plan(self, p) -> list[Job]:
        jobs = []
        for sec in p.sections:
            renders = sorted(j.key for j in p.jobs if j.stage == "render" and j.section == sec.name)
            examples = _examples_key(p, sec.name)
            if not renders or examples is None:
                continue
            recipe = {**p.base, "render": renders, "examples": examples, "method": METHOD}
            jobs.append(Job(self.name, recipe_key(recipe), sec.name, tuple(u.slug for u in sec.units)))
        return jobs

    def cost(self, job: Job, plan, rates) -> float:
        return rates.forward * 3 * (1 + plan.spec.k) * len(job.slugs)  # a forward and a backward per image

    def run(self, job: Job, ctx) -> PathsRecord:
        import torch

        from ...errors import VisfeatError
        from ...examples import Examples
        from ...images import load_image
        from ...path_similarity import THRESHOLD, path_checks, upstream_layers
        from .render import objectives_for

        sec = ctx.plan.section(job.section)
        try:
            layers = upstream_layers(ctx.model, LOGITS if sec.layer == LOGITS else sec.layer)
        except VisfeatError:  # the model's first layer: no path but its own kernels
            return PathsRecord({}, THRESHOLD)
        renders = {s: j for j in ctx.plan.by_stage("render") if j.section == sec.name for s in j.slugs}
        ex = Examples.load(ctx.store.folder("examples", _examples_key(ctx.plan, sec.name)))
        size = ctx.model.input_size

        def picture(slug: str) -> torch.Tensor:
            img = load_image(ctx.store.file("render", renders[slug].key, f"{slug}.png"))
            if tuple(img.shape[-2:]) != size:
                img = torch.nn.functional.interpolate(img[None], size=size, mode="bilinear", antialias=True)[0]
            return img

        opt, _ = objectives_for(ctx, sec, sec.units)
        pictures = torch.stack([picture(u.slug) for u in sec.units])
        naturals = [torch.stack([ctx.dataset[t["id"]] for t in ex.top_images(u.index)]) for u in sec.units]
        checks = path_checks(ctx.model, opt, pictures, naturals, layers=layers)
        units = {u.slug: c.to_json() for u, c in zip(sec.units, checks, strict=True)}
        return PathsRecord(units, THRESHOLD)

    def unit_view(self, site, section, unit, views) -> PathsView | None:
        from ...path_similarity import MIN_CALIBRATION, PathCheck

        try:
            job = site.job_of(self.name, section.name, unit.slug)
        except KeyError:
            return None
        rec = site.record(job)
        if unit.slug not in rec.units:
            return None
        check = PathCheck.from_json(rec.units[unit.slug])
        score = check.score
        return PathsView(
            check.layers,
            check.per_layer,
            check.calibration,
            check.relative,
            score if score == score else None,
            rec.threshold,
            check.flagged(rec.threshold),
            MIN_CALIBRATION,
        )


STAGE = PathsStage()
