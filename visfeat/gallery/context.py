"""Opening a build: the one place that reads the spec and checks the output folder (:func:`open_spec`), loads the
model on its device (:func:`load_gallery_model`) and opens the image set and the result store for a plan
(:func:`open_run`). The local build, the dry run and every Ray worker start here; the build plans once
(:func:`visfeat.gallery.plan.make_plan`) and a Ray worker is handed that plan instead of planning again."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..data import image_dataset
from ..images import check_writable
from ..models import load_model
from .plan import Plan
from .spec import GallerySpec, load_spec
from .stages.base import REFERENCE, Job, Rates, Tick
from .store import CACHE, Store


def load_gallery_model(spec: GallerySpec, device: str | None = None):
    """The spec's model on ``device`` (default: CUDA when available, channels-last there)."""
    return load_model(spec.model, weights=spec.weights, pretrained=spec.pretrained, device=device or "auto")


@dataclass
class RunContext:
    """What every job needs: the plan, the loaded model, the store, the image set, and a cache of what jobs load
    from earlier stages (an SAE, say) so each is read once per process."""

    plan: Plan
    model: object
    store: Store
    dataset: object
    tick: Tick | None = None  # progress: called with estimated seconds of work as render steps finish
    rates: Rates = REFERENCE  # the scale of ``tick``
    loaded: dict = field(default_factory=dict)

    def once(self, key: tuple, load: Callable[[], object]):
        """``load()`` the first time ``key`` is asked for, the same object afterwards."""
        if key not in self.loaded:
            self.loaded[key] = load()
        return self.loaded[key]


def open_spec(spec: str | Path | GallerySpec, out: str | Path | None = None) -> GallerySpec:
    """The checked spec (spec errors come before the model loads) and, given ``out``, a writable output folder."""
    spec = spec if isinstance(spec, GallerySpec) else load_spec(spec)
    if out is not None:
        check_writable(out)
    return spec


def open_run(plan: Plan, model, out: str | Path) -> RunContext:
    """The context jobs run in: the image set (an empty folder or no photos is an error here) and the store."""
    dataset = image_dataset(plan.spec.images, size=model.input_size[0], n=plan.spec.n_images)
    return RunContext(plan, model, Store(Path(out) / CACHE), dataset)


def run_job(ctx: RunContext, job: Job) -> float:
    """Run one job with its stage, then mark it finished in the store with its record; returns its seconds."""
    start = time.perf_counter()
    record = ctx.plan.stages[job.stage].run(job, ctx)
    seconds = round(time.perf_counter() - start, 3)
    ctx.store.finish(job.stage, job.key, {"seconds": seconds, "record": record.to_json()})
    return seconds
