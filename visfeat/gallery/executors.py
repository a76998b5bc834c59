"""Executors: who runs a build's jobs. :class:`Local` runs them one after another in this process;
:class:`RayPool` runs the very same :class:`~visfeat.gallery.stages.base.Job` objects on long-lived Ray worker
actors, each handed the driver's plan (through Ray's object store, once) instead of planning again.

Both yield ``(job, seconds)`` as jobs finish, and neither returns images: a job writes its files into the
store itself (:func:`visfeat.gallery.context.run_job`), so with Ray the site folder must be storage that every
worker sees (one machine, NFS, a bucket mount). Ray is imported only when a :class:`RayPool` is made.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import VisfeatError
from .context import RunContext, load_gallery_model, open_run, run_job
from .plan import Plan, fingerprint
from .stages.base import Job

MAX_ATTEMPTS = 3  # a job whose worker died is retried on another worker, at most this many times in all


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """Run with ``threads`` torch CPU threads (None: leave as is). CPU sums depend on the thread count, so a
    build fixes it per job and a Ray worker computes the same bytes as a single-process build."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Local:
    """Jobs one after another in this process, on the build's own model."""

    ctx: RunContext
    threads: int | None = None

    def run(self, jobs: Iterable[Job], started=None) -> Iterator[tuple[Job, float]]:
        for job in jobs:
            if started is not None:
                started(f"{job.stage} {job.section}".strip())
            with torch_threads(self.threads):
                yield job, run_job(self.ctx, job)

    def close(self) -> None:
        pass


class GalleryWorker:
    """A Ray actor's state: the spec's model, loaded once per process (a restarted actor loads it again from
    the spec, never from weights sent through the object store), checked against the driver's weights; the
    driver's plan arrives with the first job (and again after a restart)."""

    def __init__(self, spec, out: str, device: str | None, threads: int | None, weights: str):
        self.spec, self.out, self.threads = spec, out, threads
        with torch_threads(threads):
            self.model = load_gallery_model(spec, device)
            mine = fingerprint(self.model)
        if mine != weights:
            raise VisfeatError(
                f"the worker on {socket.gethostname()} loaded different weights for {spec.model} "
                f"(fingerprint {mine}, the driver's {weights}); give every machine the same "
                "weights file (weights = a path on shared storage)"
            )
        self.ctx: RunContext | None = None
        self.plan_ref = None

    def where(self) -> dict:
        """Host, process id and device of this worker (for logs and tests)."""
        return {"host": socket.gethostname(), "pid": os.getpid(), "device": str(self.model.device)}

    def resolve(self, settings, unit: str | None = None):
        """``settings`` with ``"auto"`` resolved for this worker's device (see :meth:`RayPool.resolve`)."""
        from .auto import resolve_settings

        return resolve_settings(self.model, settings, unit)

    def run(self, job: Job, plan: list) -> float:
        """Run one job (its files go to the store); returns its seconds. ``plan``: ``[ObjectRef]`` of the build's
        plan (in a list, so Ray passes the reference and the plan is fetched once per worker)."""
        if self.plan_ref != plan[0]:
            import ray

            self.ctx, self.plan_ref = open_run(ray.get(plan[0]), self.model, self.out), plan[0]
        with torch_threads(self.threads):
            return run_job(self.ctx, job)


def ray_address(address: str | None) -> str:
    """``--ray ADDRESS``, else ``RAY_ADDRESS``, else ``"local"`` (a cluster on this machine, started here)."""
    return address or os.environ.get("RAY_ADDRESS") or "local"


def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise VisfeatError("--ray needs Ray: pip install 'visfeat[ray]' (on every machine of the cluster)") from e
    return ray


class RayPool:
    """Long-lived worker actors on a Ray cluster: one per GPU when the cluster has GPUs, else one per
    ``threads`` CPUs. Jobs are handed out with ``ray.wait``, at most ``depth`` queued per worker, and results
    are yielded as they arrive. A job whose worker died is handed out again, to another live worker first; Ray
    restarts the dead one, which takes jobs again once it answers (its model loaded)."""

    def __init__(
        self,
        spec,
        out: Path,
        fingerprint: str,
        *,
        address: str | None = None,
        workers: int | None = None,
        threads: int | None = None,
        device: str | None = None,
        depth: int = 2,
        log=None,
    ):
        ray = _import_ray()
        self.ray, self.depth, self.log = ray, depth, log or (lambda msg: print(msg, file=sys.stderr))
        self.started, self.workers = False, []
        if not ray.is_initialized():
            address = ray_address(address)
            local = {}
            if address == "local":  # a cluster of this machine: no dashboard, no usage statistics
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                local = {"include_dashboard": False}
            env = {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}
            try:
                ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": env}, **local)
            except (ConnectionError, RuntimeError, ray.exceptions.AuthenticationError) as e:
                raise VisfeatError(
                    f"cannot connect to the Ray cluster at {address}: {str(e).splitlines()[0]}. Is it up "
                    "(`ray status`)? A cluster with token authentication needs RAY_AUTH_MODE=token here too "
                    "(docs/scale.md)"
                ) from None
            self.started = True
        res = ray.cluster_resources()
        self.gpus = 0 if device == "cpu" else int(res.get("GPU", 0))
        if device == "cuda" and not self.gpus:
            self.close()
            raise VisfeatError("--device cuda, but the Ray cluster has no GPUs (see `ray status`); drop --device")
        if self.gpus:
            self.options, n = {"num_gpus": 1, "num_cpus": 1}, self.gpus
        else:
            threads = threads or 1
            self.options, n = {"num_cpus": threads}, max(1, int(res.get("CPU", 1)) // threads)
        self.size = min(workers or n, n)  # more would wait for resources the cluster does not have
        self.threads, self.spec, self.out, self.fingerprint = threads, spec, str(Path(out).resolve()), fingerprint
        self.start_seconds = 0.0  # starting the workers: each process up, its model loaded
        #: one row per job handed out: its name, worker, when it was handed out and when its result (or its
        #: worker's death) arrived (``time.perf_counter()``), the seconds it ran, and whether it was lost
        self.timeline: list[dict] = []
        self._down: dict[int, tuple[float, float]] = {}  # restarting workers: when each died, when to ask next
        self._probes: dict = {}  # ref -> worker: a restarting worker's first call, answered once it is back
        self._gone: set[int] = set()  # workers Ray could not restart
        self.plan: list = []  # [ObjectRef] of the build's plan (see use)

    def _start(self) -> None:
        """Start the worker actors (once): each loads the model; errors loading it surface here."""
        if self.workers:
            return
        ray, start = self.ray, time.perf_counter()
        actor = ray.remote(max_restarts=-1, max_task_retries=0, **self.options)(GalleryWorker)
        device = "cuda" if self.gpus else "cpu"
        self.workers = [
            actor.remote(self.spec, self.out, device, self.threads, self.fingerprint) for _ in range(self.size)
        ]
        try:
            hosts = {w["host"] for w in self.where()}
        except ray.exceptions.RayActorError as e:
            self.close()
            raise VisfeatError(f"a Ray worker could not start: {e}") from None
        self.start_seconds = time.perf_counter() - start
        n, each = self.size, "1 GPU" if self.gpus else f"{self.threads} CPU thread{'s' * (self.threads != 1)}"
        self.log(f"ray: {n} worker{'s' * (n != 1)} on {len(hosts)} machine{'s' * (len(hosts) != 1)}, {each} each")

    def resolve(self, model, settings, unit: str | None = None):
        """Render settings with ``"auto"`` resolved on a worker's device (a GPU's free memory, bf16), for the
        driver's plan: the driver's own model is on the CPU. Called by :func:`visfeat.gallery.plan.make_plan`."""
        self._start()
        return self.ray.get(self.workers[0].resolve.remote(settings, unit))

    def where(self) -> list[dict]:
        """Where each worker runs (waits for every worker to have loaded the model)."""
        return self.ray.get([w.where.remote() for w in self.workers])

    def use(self, plan: Plan) -> RayPool:
        """Hand the build's plan to the workers (put once into Ray's object store; each worker fetches it with its
        first job). Returns the pool."""
        self.plan = [self.ray.put(plan)]
        return self

    def run(self, jobs: Iterable[Job], started=None) -> Iterator[tuple[Job, float]]:
        self._start()
        ray = self.ray
        jobs = list(jobs)
        if started is not None and jobs:
            started(f"{jobs[0].stage} on {len(self.workers)} workers")
        pending = deque(jobs)
        died_on: dict[str, set[int]] = {}  # job key -> workers that died running it
        attempts: dict[str, int] = {}
        queued = dict.fromkeys(range(len(self.workers)), 0)
        flight: dict = {}  # ref -> (job, worker, when handed out)
        while pending or flight:
            now = time.perf_counter()
            for i, (_, after) in list(self._down.items()):  # ask a restarting worker whether it is back
                if after <= now and i not in self._probes.values():
                    self._probes[self.workers[i].where.remote()] = i
            self._hand_out(pending, queued, flight, set(self._down) | self._gone, died_on)
            if not flight and not self._down:
                raise VisfeatError("every Ray worker is gone (see `ray status`); run the build again to resume")
            refs = [*flight, *self._probes]
            if not refs:  # only restarting workers, none to ask yet
                time.sleep(0.25)
                continue
            ready, _ = ray.wait(refs, num_returns=1, timeout=0.5 if self._down else None)
            for ref in ready:
                if ref in self._probes:
                    self._answer(self._probes.pop(ref), ref)
                    continue
                job, i, sent = flight.pop(ref)
                queued[i] -= 1
                row = {"job": job.name, "worker": i, "sent": sent, "seconds": None, "lost": False}
                self.timeline.append(row)
                try:
                    seconds = ray.get(ref)
                    row.update(ended=time.perf_counter(), seconds=seconds)
                except ray.exceptions.RayActorError as e:  # died (or restarting): the job may or may not have run
                    row.update(ended=time.perf_counter(), lost=True)
                    died_on.setdefault(job.key, set()).add(i)
                    attempts[job.key] = attempts.get(job.key, 0) + 1
                    if attempts[job.key] >= MAX_ATTEMPTS:
                        raise VisfeatError(f"{job.name} lost its worker {MAX_ATTEMPTS} times; last: {e}") from e
                    self._down.setdefault(i, (time.perf_counter(), 0.0))
                    self.log(f"ray: worker {i} died; its {job.name} goes to another worker, or to it once restarted")
                    pending.appendleft(job)
                    continue
                except ray.exceptions.RayTaskError as e:
                    raise e.as_instanceof_cause() from None  # the job's own error (a bad spec value, NaNs)
                yield job, seconds

    def _answer(self, i: int, ref) -> None:
        """A restarting worker's answer: back (it takes jobs again), still restarting (ask again in a moment),
        or gone for good (Ray could not restart it)."""
        died, _ = self._down[i]
        try:
            self.ray.get(ref)
        except self.ray.exceptions.ActorUnavailableError:
            self._down[i] = (died, time.perf_counter() + 0.25)
            return
        except self.ray.exceptions.RayActorError as e:
            del self._down[i]
            self._gone.add(i)
            self.log(f"ray: worker {i} could not be restarted: {str(e).splitlines()[0]}")
            return
        del self._down[i]
        self.log(f"ray: worker {i} is back, model loaded, {time.perf_counter() - died:.1f} s after it died")

    def _hand_out(self, pending: deque, queued: dict, flight: dict, down: set[int], died_on: dict) -> None:
        """Give pending jobs to live workers: an idle one first, and one it has not died on before one it has; a
        second job is queued behind a running one only while more jobs wait than there are live workers (so
        that the last jobs of a stage do not wait behind others while a worker idles)."""
        up = [i for i in queued if i not in down]
        while pending:
            job = pending[0]
            room = [i for i in up if queued[i] == 0 or (queued[i] < self.depth and len(pending) > len(up))]
            if not room:
                return
            i = min(room, key=lambda k: (queued[k], k in died_on.get(job.key, ()), k))
            pending.popleft()
            flight[self.workers[i].run.remote(job, self.plan)] = (job, i, time.perf_counter())
            queued[i] += 1

    def close(self) -> None:
        for w in self.workers:
            with contextlib.suppress(Exception):
                self.ray.kill(w)
        self.workers = []
        if self.started:
            self.ray.shutdown()
            self.started = False
