"""The build plan: a spec resolved against its model into sections and jobs, each job keyed by the hash of its
recipe (model fingerprint, units, settings, seed, image set, visfeat version).

Nothing here computes results: :func:`make_plan` checks every layer, unit, class, SAE and circuit of the spec
against the model's catalogue (errors name the key, its line and the fix), then asks every stage for its jobs.
A job whose key the store already holds is not run again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from ..version import __version__
from .auto import resolve_settings
from .sections import Section, layer_sections, slug
from .spec import GallerySpec, RenderSettings
from .stages.base import Job
from .stages.registry import Stages, default_stages
from .store import recipe_key

Resolve = Callable[..., RenderSettings]


@dataclass
class Planning:
    """What a stage plans from: the spec, the model, every section, the recipe fields every key shares, the image
    set's key, how ``"auto"`` settings resolve, and the jobs the stages before it planned."""

    spec: GallerySpec
    model: object
    sections: list[Section]
    base: dict
    images_key: str
    resolve: Resolve
    jobs: list[Job] = field(default_factory=list)

    def key_of(self, stage: str, section: str) -> str | None:
        """The key of ``stage``'s job for ``section`` (planned earlier), or None."""
        return next((j.key for j in self.jobs if j.stage == stage and j.section == section), None)


@dataclass
class Plan:
    """Sections and jobs of a spec for one model; ``fingerprint`` identifies the model's weights."""

    spec: GallerySpec
    model_name: str
    slug: str  # the model's folder in the site
    fingerprint: str
    images_key: str
    sections: list[Section]
    jobs: list[Job]
    stages: Stages

    def section(self, name: str) -> Section:
        return next(s for s in self.sections if s.name == name)

    def by_stage(self, stage: str) -> list[Job]:
        return [j for j in self.jobs if j.stage == stage]

    def describe(self) -> str:
        """The plan as text: units per section, jobs per stage."""
        rows = [f"{self.spec.title}: model {self.model_name} (weights {self.fingerprint[:8]})"]
        for s in self.sections:
            r = s.settings
            rows.append(
                f"  {s.name:<24} {len(s.units):>5} {s.kind} units  steps {r.steps}, views {r.views}, "
                f"{r.lr_schedule}, settle {r.settle:g}, "
                f"+{r.diverse} diverse{', negative' if r.negative else ''}, batch {r.batch_size}"
            )
        for stage in self.stages:
            jobs = self.by_stage(stage.name)
            if jobs:
                rows.append(f"  stage {stage.name:<9} {len(jobs):>4} jobs, {sum(j.size for j in jobs)} units")
        return "\n".join(rows)


def fingerprint(model) -> str:
    """Hash of the model's name, parameters and buffers: a different checkpoint is a different recipe."""
    h = hashlib.sha256(model.name.encode())
    for name, t in model.module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _probe_unit(model, sec: Section) -> str:
    """A unit whose render costs what the section's do (an SAE's latents: a channel of its layer)."""
    if sec.kind != "latent":
        return sec.units[0].unit
    return f"{sec.layer}:0" + ("@mean" if model.layers[sec.layer].layout == "tokens" else "")


def make_plan(
    spec: GallerySpec,
    model,
    stages: Stages | None = None,
    *,
    resolve: Resolve | None = None,
    weights: str | None = None,
) -> Plan:
    """Check ``spec`` against ``model`` and list every stage's jobs (no results are computed). ``resolve(model,
    settings, unit)`` turns ``"auto"`` render settings into values (default :func:`resolve_settings` on the model's
    device; a Ray build resolves them on a worker's GPU). ``weights``: the model's :func:`fingerprint` when the caller
    has it (every weight is hashed once per build)."""
    stages = stages or default_stages()
    resolve = resolve or resolve_settings
    fp = weights or fingerprint(model)
    sections = layer_sections(spec, model)
    for stage in stages:
        for sec in stage.sections(spec, model):
            sections.append(sec)
        stage.check(spec, model)
    sections = [replace(sec, settings=resolve(model, sec.settings, _probe_unit(model, sec))) for sec in sections]
    images_key = recipe_key({"folder": spec.images, "n": spec.n_images, "size": model.input_size[0]})
    planning = Planning(spec, model, sections, {"model": fp, "visfeat": __version__}, images_key, resolve)
    for stage in stages:
        planning.jobs += stage.plan(planning)
    return Plan(spec, model.name, slug(model.name), fp, images_key, sections, planning.jobs, stages)
