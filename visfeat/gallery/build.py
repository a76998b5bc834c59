"""``build_gallery``: spec → plan → the jobs the store lacks, stage by stage, on an executor → site.

A build is a function of (spec, stored results): a rebuild with nothing changed runs no job, and a build that
was interrupted (Ctrl-C, kill -9) is finished by the next one, which runs only the jobs without a ``done.json``.
One progress bar covers the whole build, scaled by each job's estimated seconds (``Stage.cost``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .context import load_gallery_model, open_run, open_spec
from .plan import Plan, fingerprint, make_plan
from .spec import GallerySpec
from .stages.base import REFERENCE, Rates
from .stages.registry import Stages


@dataclass
class BuildReport:
    """What a build did per stage: jobs and units run or reused, seconds; the site's index page."""

    index: Path
    plan: Plan
    ran: dict[str, int] = field(default_factory=dict)
    reused: dict[str, int] = field(default_factory=dict)
    units_ran: dict[str, int] = field(default_factory=dict)
    units_kept: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    files_written: int = 0
    workers: int = 1  # processes that ran the jobs (Ray worker actors, or this one)
    timeline: list[dict] = field(default_factory=list)  # Ray: each job's worker and times (RayPool.timeline)

    @property
    def units_rendered(self) -> int:
        """Units the render stage rendered in this build."""
        return self.units_ran.get("render", 0)

    @property
    def units_reused(self) -> int:
        """Units whose pictures were already stored."""
        return self.units_kept.get("render", 0)

    @property
    def retried(self) -> int:
        """Jobs handed out again after their worker died (Ray)."""
        return sum(row["lost"] for row in self.timeline)


def build_gallery(
    spec: str | Path | GallerySpec,
    out: str | Path,
    *,
    device: str | None = None,
    progress: bool = True,
    model=None,
    threads: int | None = None,
    ray: bool | str = False,
    workers: int | None = None,
    stages: Stages | None = None,
) -> BuildReport:
    """Build the site for ``spec`` into ``out``; only the jobs whose results are not stored run.

    ``threads``: torch CPU threads per job (fixed, so that builds on different executors write the same bytes).
    ``ray``: run the jobs on Ray worker actors: True (``RAY_ADDRESS``, else a local cluster) or a cluster
    address; ``out`` must then be storage that every worker sees. ``workers``: how many (default: one per GPU,
    else one per ``threads`` CPUs). This process then only plans and writes pages, on the CPU.
    ``stages``: the build's stages (default: the package's, :func:`~visfeat.gallery.stages.default_stages`).
    """
    from .executors import Local, RayPool
    from .pages import write_site

    spec = open_spec(spec, out)
    out = Path(out)
    model = model or load_gallery_model(spec, "cpu" if ray is not False and device is None else device)
    weights = fingerprint(model)
    pool = None
    if ray is not False:
        address = ray if isinstance(ray, str) else None
        pool = RayPool(spec, out, weights, address=address, workers=workers, threads=threads, device=device)
    bar = None
    try:
        # every spec error is raised here, before anything is written; "auto" settings resolve on a worker's GPU
        plan = make_plan(spec, model, stages, resolve=pool.resolve if pool and pool.gpus else None, weights=weights)
        ctx = open_run(plan, model, out)  # no photos or images: an error, too
        out.mkdir(parents=True, exist_ok=True)
        ctx.store.sweep()
        report = BuildReport(out / "index.html", plan)
        todo = [j for j in plan.jobs if not ctx.store.done(j.stage, j.key)]
        for stage in plan.stages:
            jobs = plan.by_stage(stage.name)
            report.reused[stage.name] = sum(1 for j in jobs if j not in todo)
            report.units_kept[stage.name] = sum(j.size for j in jobs if j.slugs and j not in todo)
        cost = {j.key: plan.stages[j.stage].cost(j, plan, REFERENCE) for j in todo}
        bar = _bar(sum(cost.values()), progress)
        ticked = [0.0]

        def tick(seconds: float) -> None:
            ticked[0] += seconds
            bar.update(seconds)

        ctx.tick = tick if bar is not None and pool is None else None  # Ray: progress per finished job
        runner = pool.use(plan) if pool is not None else Local(ctx, threads)
        for stage in plan.stages:
            start = time.perf_counter()
            jobs = [j for j in todo if j.stage == stage.name]
            if pool is not None:  # the costliest first, so that no worker is left with a long job at the end
                jobs.sort(key=lambda j: cost[j.key], reverse=True)
            for job, _ in runner.run(jobs, started=bar.set_description if bar else None) if jobs else ():
                report.ran[stage.name] = report.ran.get(stage.name, 0) + 1
                report.units_ran[stage.name] = report.units_ran.get(stage.name, 0) + (job.size if job.slugs else 0)
                if bar is not None:
                    bar.update(cost[job.key] - ticked[0])  # what the job did not report as it ran
                ticked[0] = 0.0
            report.seconds[stage.name] = time.perf_counter() - start
        if pool is not None:
            report.workers, report.timeline = len(pool.workers) or 1, pool.timeline
            report.seconds["ray workers start"] = pool.start_seconds  # inside the first stage's seconds
            pool.close()  # the workers are done: the pages are written here
        start = time.perf_counter()
        if bar is not None:
            bar.set_description("writing pages")
        report.files_written = write_site(ctx, out)["written"]
        report.seconds["writing"] = time.perf_counter() - start
    finally:
        if pool is not None:
            pool.close()
        if bar is not None:
            bar.close()
    return report


def _bar(total: float, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=round(total, 1), unit="s", bar_format="{desc:<28} {percentage:3.0f}%|{bar}| {elapsed}<{remaining}"
    )


def calibrate(plan: Plan, model, steps: int = 3) -> Rates:
    """This machine's rates: a few render steps of one batch per section (the difference of a 1-step and a
    ``1 + steps``-step render leaves out a call's fixed cost), and one batch of 8 images through the model."""
    from ..data import default_images
    from ..render import default_param, render
    from ..units import parse_unit

    per_step: dict[str, float] = {}
    for sec in plan.sections:
        n = min(sec.settings.batch_size, len(sec.units))
        # latents: a channel of their layer stands in (the cost of a step does not depend on the unit)
        objs = [f"{sec.layer}:0"] * n if sec.kind == "latent" else [str(parse_unit(u.unit)) for u in sec.units[:n]]
        runs = []
        for s in (1, 1 + steps):
            t = time.perf_counter()
            render(model, objs, param=default_param(model), steps=s, progress=False, preact=False)
            runs.append(time.perf_counter() - t)
        per_step[sec.name] = max(runs[1] - runs[0], 1e-4) / steps / n
    size = model.input_size[0]
    batch = torch.stack([default_images(n=8, size=size)[i] for i in range(8)]).to(model.device)
    t = time.perf_counter()
    with torch.no_grad():
        model(batch)
    forward = (time.perf_counter() - t) / 8
    return Rates(forward, max(per_step.values(), default=REFERENCE.step), per_step)


def estimate(plan: Plan, model, rates: Rates | None = None) -> dict[str, float]:
    """Seconds per stage on this machine (:func:`calibrate` unless ``rates`` are given): each job's
    ``Stage.cost``."""
    rates = rates or calibrate(plan, model)
    return {s.name: sum(s.cost(j, plan, rates) for j in plan.by_stage(s.name)) for s in plan.stages}


__all__ = ["BuildReport", "build_gallery", "calibrate", "estimate", "load_gallery_model"]
