"""``build_gallery``: spec → plan → the jobs the store lacks (local, one process) → site.

A build is a function of (spec, stored results): a rebuild with nothing changed runs no job, and a
build that was interrupted (Ctrl-C, kill -9) is finished by the next one, which runs only the jobs
without a ``done.json``. One progress bar covers the whole build.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .jobs import WORK, render_work
from .plan import STAGES, Job, Plan, image_size, make_plan
from .spec import GallerySpec, load_spec
from .store import CACHE, Store


@dataclass
class BuildReport:
    """What a build did: jobs and units run or reused per stage, seconds per stage, the site's index page."""

    index: Path
    plan: Plan
    ran: dict[str, int] = field(default_factory=dict)
    reused: dict[str, int] = field(default_factory=dict)
    units_rendered: int = 0
    units_reused: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    files_written: int = 0
    workers: int = 1  # processes that ran the jobs (Ray worker actors, or this one)
    timeline: list[dict] = field(default_factory=list)  # Ray: each job's worker and times (RayPool.timeline)

    @property
    def retried(self) -> int:
        """Jobs handed out again after their worker died (Ray)."""
        return sum(row["lost"] for row in self.timeline)


def load_gallery_model(spec: GallerySpec, device: str | None = None):
    """The spec's model on ``device`` (default: CUDA when available; there channels-last, cuDNN's fast layout)."""
    from ..models import load_model

    kwargs = {}
    if spec.weights:
        kwargs["weights"] = spec.weights
    if not spec.pretrained:
        kwargs["pretrained"] = False
    model = load_model(spec.model, **kwargs)
    return model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).channels_last()


def _cost(plan: Plan, job: Job) -> float:
    """Relative cost of a job, for the progress bar (render: unit-steps; others: rough constants)."""
    if job.stage == "render":
        return render_work(plan.section(job.section).settings, len(job.slugs))
    if job.stage == "examples":
        return plan.spec.n_images / 16
    if job.stage == "sae":
        return job.extra["train"]["images"] / 8 if job.extra["train"] else 4
    if job.stage == "circuits":
        return plan.spec.render.steps * 12 / 64
    return 4.0


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
) -> BuildReport:
    """Build the site for ``spec`` into ``out``; only the jobs whose results are not stored run.

    ``threads``: torch CPU threads per job (fixed, so that builds on different executors write the same bytes).
    ``ray``: run the jobs on Ray worker actors: True (``RAY_ADDRESS``, else a local cluster) or a cluster
    address; ``out`` must then be storage that every worker sees. ``workers``: how many (default: one per GPU,
    else one per ``threads`` CPUs). This process then only plans and writes pages, on the CPU.
    """
    from ..data import image_dataset
    from ..images import check_writable
    from .executors import Local, RayPool
    from .jobs import Context
    from .pages import write_site

    spec = spec if isinstance(spec, GallerySpec) else load_spec(spec)
    out = Path(out)
    check_writable(out)
    model = model or load_gallery_model(spec, "cpu" if ray is not False and device is None else device)
    plan = make_plan(spec, model)  # every spec error is raised here, before anything is written
    size = image_size(model)
    dataset = image_dataset(spec.images, size=size, n=spec.n_images)  # no photos or images: an error, too
    out.mkdir(parents=True, exist_ok=True)
    store = Store(out / CACHE)
    store.sweep()
    pool = None
    if ray is not False:
        address = ray if isinstance(ray, str) else None
        pool = RayPool(spec, out, plan.fingerprint, address=address, workers=workers, threads=threads, device=device)
        if pool.gpus:  # "auto" settings resolved on a worker's GPU, not on this process's CPU
            try:
                plan = make_plan(spec, model, resolve=pool.resolve)
            except BaseException:
                pool.close()
                raise
    ctx = Context(plan, model, store, dataset)
    report = BuildReport(out / "index.html", plan)
    todo = [j for j in plan.jobs if not store.done(j.stage, j.key)]
    for stage in STAGES:
        jobs = plan.by_stage(stage)
        report.reused[stage] = sum(1 for j in jobs if j not in todo)
    report.units_reused = sum(j.size for j in plan.by_stage("render") if j not in todo)
    bar = _bar(sum(_cost(plan, j) for j in todo), progress)
    ticked = [0.0]

    def tick(work: float) -> None:
        ticked[0] += work
        bar.update(work)

    def describe(text: str) -> None:
        if bar is not None:
            bar.set_description(text)

    ctx.tick = tick if bar is not None and pool is None else None  # Ray: progress per finished job
    runner = pool or Local(ctx, threads)
    try:
        for stage in STAGES:
            start = time.perf_counter()
            jobs = [j for j in todo if j.stage == stage]
            if pool is not None:  # the costliest first, so that no worker is left with a long job at the end
                jobs.sort(key=lambda j: _cost(plan, j), reverse=True)
            for job, _ in runner.run(jobs, started=describe) if jobs else ():
                report.ran[stage] = report.ran.get(stage, 0) + 1
                if stage == "render":
                    report.units_rendered += job.size
                if bar is not None:
                    bar.update(_cost(plan, job) - ticked[0])  # what the job did not report as it ran
                ticked[0] = 0.0
            report.seconds[stage] = time.perf_counter() - start
        if pool is not None:
            report.workers, report.timeline = len(pool.workers) or 1, pool.timeline
            report.seconds["ray workers start"] = pool.start_seconds  # inside the first stage's seconds
        runner.close()  # the workers are done: the pages are written here
        start = time.perf_counter()
        if bar is not None:
            bar.set_description("writing pages")
        written = write_site(ctx, out)
        report.seconds["writing"] = time.perf_counter() - start
        report.files_written = written["written"]
    finally:
        runner.close()
        if bar is not None:
            bar.close()
    return report


def _bar(total: float, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(
        total=round(total, 1), unit="work", bar_format="{desc:<28} {percentage:3.0f}%|{bar}| {elapsed}<{remaining}"
    )


def estimate(plan: Plan, model, calibrate_steps: int = 3) -> dict[str, float]:
    """Seconds per stage, from a short calibration on this machine: a few render steps of one batch per
    section, one batch through the model for the examples pass; SAE training and weights from rough
    per-job constants measured on a 2-core CPU."""
    from ..render import default_param, render
    from ..units import parse_unit

    seconds = {s: 0.0 for s in STAGES}
    per_step: dict[str, float] = {}
    for sec in plan.sections:
        r = sec.settings
        n = min(r.batch_size, len(sec.units))
        # latents: a channel of their layer stands in (the cost of a step does not depend on the unit)
        objs = [f"{sec.layer}:0"] * n if sec.kind == "latent" else [str(parse_unit(u.unit)) for u in sec.units[:n]]
        runs = []
        for steps in (1, 1 + calibrate_steps):  # the difference leaves out the fixed cost of a call
            t = time.perf_counter()
            render(model, objs, param=default_param(model), steps=steps, progress=False, preact=False)
            runs.append(time.perf_counter() - t)
        per_step[sec.name] = max(runs[1] - runs[0], 1e-4) / calibrate_steps / n
    for job in plan.by_stage("render"):
        r = plan.section(job.section).settings
        seconds["render"] += per_step[job.section] * render_work(r, len(job.slugs)) * WORK
    from ..data import default_images

    size = image_size(model)
    batch = torch.stack([default_images(n=8, size=size)[i] for i in range(8)]).to(model.device)
    t = time.perf_counter()
    with torch.no_grad():
        model(batch)
    forward = (time.perf_counter() - t) / 8
    if plan.by_stage("examples"):
        seconds["examples"] = forward * plan.spec.n_images * 1.3
    for job in plan.by_stage("sae"):
        train = job.extra["train"]
        seconds["sae"] += forward * ((train or {}).get("images", 0) + 200) + (train or {}).get("epochs", 0) * 4
    seconds["weights"] = 2.0 * len(plan.by_stage("weights"))
    for job in plan.by_stage("circuits"):
        c = job.extra["circuit"]
        nodes = 1 + sum(min(c.width or 2 * c.k, 2 * c.k * (c.width or 2 * c.k)) for _ in c.sources)
        seconds["circuits"] += 2 + nodes * plan.spec.render.steps * max(per_step.values(), default=0.05)
    return seconds


__all__ = ["BuildReport", "build_gallery", "estimate", "load_gallery_model"]
