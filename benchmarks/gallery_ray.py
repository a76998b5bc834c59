"""Ray build overhead and recovery on a local cluster: the same spec built in one process and on Ray workers.

    python benchmarks/gallery_ray.py [--units 24] [--steps 16] [--batch 4] [--netns] [--figure PNG]

The spec: ``--units`` channels of EfficientNet-Lite0's ``bn2`` (the embedded weights; the last feature layer,
so its weights to the classes are one linear map), ``--steps`` render steps in batches of ``--batch``, no diverse
or negative images, a 16-image examples pass; every job runs on one torch thread. Builds, each into a fresh folder:
(a) single process; (b) Ray, 1 worker; (c) Ray, 2 workers; (d) Ray, 2 workers, one SIGKILLed mid-render.
Printed: the render stage's seconds per unit of each, the Ray overhead per unit ((b) - (a)), the speed-up of (c)
over (a), the cost of the workers' start (cluster up, model loaded), and for (d) the seconds from the kill until
Ray has restarted the worker (its model loaded again) and the wall time the kill added over (c). All sites are
checked to be byte-identical. The cluster is ``ray.init(address="local")`` with 2 CPUs and no dashboard;
``--netns`` re-runs this script inside a private network namespace with only loopback (``unshare -n``, root).
``--figure`` draws the timeline of (d) from ``BuildReport.timeline``: each worker's jobs, the kill, the restart.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SPEC = """title = "ray overhead"
model = "efficientnet_lite0"
[images]
n = 16
k = 4
[render]
steps = {steps}
batch_size = {batch}
diverse = 0
[[layers]]
name = "bn2"
units = "0-{last}"
"""


def site_files(site: Path) -> dict[str, bytes]:
    return {
        p.relative_to(site).as_posix(): p.read_bytes()
        for p in sorted(site.rglob("*"))
        if p.is_file() and ".visfeat-cache" not in p.parts
    }


def worker_pids(state: str = "") -> set[int]:
    """Pids of gallery worker actors; ``state`` "run" for busy ones, "" for ready ones (idle or busy)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    pids = set()
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        title = args.split()[0] if args.split() else ""
        if title == f"ray::GalleryWorker.{state}" or (
            not state and title in ("ray::GalleryWorker", "ray::GalleryWorker.run")
        ):
            pids.add(int(pid))
    return pids


def draw_timeline(rows: list[dict], kill: dict, path: Path) -> None:
    """Each worker's render jobs as bars (a worker runs its jobs one after another, so a job starts when it
    was handed out or when the worker's previous job ended), lost jobs hatched, the kill and the restart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["job"].startswith("render")]
    t0 = min(r["sent"] for r in rows)
    fig, ax = plt.subplots(figsize=(9, 2.6), dpi=110)
    busy: dict[int, float] = {}
    for r in sorted(rows, key=lambda r: r["ended"]):
        w, end = r["worker"], r["ended"] - t0
        start = end - r["seconds"] if r["seconds"] is not None else max(r["sent"] - t0, busy.get(w, 0.0))
        busy[w] = end
        style = {"color": "#d9534f", "hatch": "//", "alpha": 0.6} if r["lost"] else {"color": "#4a7ab5"}
        ax.barh(w, end - start, left=start, height=0.6, edgecolor="white", **style)
        if end - start > 0.5:  # a job queued behind the lost one never ran: no bar to label
            ax.text(start + (end - start) / 2, w, r["job"].split()[-1], ha="center", va="center", fontsize=7, color="w")
    if "at" in kill:
        ax.axvline(kill["at"] - t0, color="#d9534f", lw=1.5)
        ax.text(kill["at"] - t0, 1.45, " SIGKILL", color="#d9534f", fontsize=8, va="top")
        if "restarted" in kill:
            ax.axvline(kill["at"] - t0 + kill["restarted"], color="#5cb85c", lw=1.5, ls="--")
            ax.text(kill["at"] - t0 + kill["restarted"], 1.45, " restarted", color="#3d8b3d", fontsize=8, va="top")
    ax.set_yticks(sorted(busy), [f"worker {w}" for w in sorted(busy)])
    ax.set_ylim(-0.5, 1.5)
    ax.set_xlabel("seconds into the render stage (hatched: a job lost with its worker, then run by the other)")
    ax.set_title("Ray build, 2 workers, one SIGKILLed mid-render: render jobs (units) per worker", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def build(spec: Path, out: Path, **kw) -> tuple[float, object]:
    from visfeat.gallery import build_gallery

    t = time.perf_counter()
    report = build_gallery(spec, out, threads=1, progress=False, **kw)
    return time.perf_counter() - t, report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=24)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--netns", action="store_true", help="re-run inside a loopback-only network namespace")
    ap.add_argument("--figure", default=None, help="draw the killed build's timeline into this PNG")
    args = ap.parse_args()
    if args.netns:
        argv = [a for a in sys.argv if a != "--netns"]
        cmd = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"', sys.executable, *argv]
        sys.exit(subprocess.call(cmd))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    tmp = Path(tempfile.mkdtemp(prefix="gallery-ray-"))
    spec = tmp / "spec.toml"
    spec.write_text(SPEC.format(steps=args.steps, batch=args.batch, last=args.units - 1))
    n = args.units
    try:
        single_wall, single = build(spec, tmp / "single")
        import ray

        t = time.perf_counter()
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        cluster_up = time.perf_counter() - t
        one_wall, one = build(spec, tmp / "ray1", ray=True, workers=1)
        two_wall, two = build(spec, tmp / "ray2", ray=True, workers=2)

        kill: dict = {}

        def killer() -> None:
            renders = tmp / "killed" / ".visfeat-cache" / "render"
            while len(list(renders.glob("*/done.json"))) < max(1, n // args.batch // 3):
                time.sleep(0.01)
            while not (busy := worker_pids("run")):
                time.sleep(0.005)
            victim = next(iter(busy))
            others = worker_pids() - {victim}
            kill["at"] = time.perf_counter()
            os.kill(victim, signal.SIGKILL)
            while not (worker_pids() - others - {victim}):  # the restarted actor, its model loaded again
                time.sleep(0.005)
            kill["restarted"] = time.perf_counter() - kill["at"]

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        killed_wall, killed = build(spec, tmp / "killed", ray=True, workers=2)
        thread.join(60)
        ray.shutdown()

        ref = site_files(tmp / "single")
        same = all(site_files(tmp / name) == ref for name in ("ray1", "ray2", "killed"))
        r = {k: rep.seconds["render"] for k, rep in (("single", single), ("ray1", one), ("ray2", two))}
        print(f"spec: {n} channels of bn2, {args.steps} steps, batches of {args.batch}, 1 torch thread per job")
        print(f"{'build':<26}{'wall s':>9}{'render s':>10}{'render s/unit':>15}")
        for name, wall, rep in (
            ("single process", single_wall, single),
            ("ray, 1 worker", one_wall, one),
            ("ray, 2 workers", two_wall, two),
            ("ray, 2 workers, 1 killed", killed_wall, killed),
        ):
            print(f"{name:<26}{wall:>9.1f}{rep.seconds['render']:>10.1f}{rep.seconds['render'] / n:>15.3f}")
        print(f"cluster start (ray.init, local, 2 CPUs): {cluster_up:.1f} s")
        print(
            f"workers start (processes up, model loaded), 1 and 2 workers: {one.seconds['ray workers start']:.1f} s, "
            f"{two.seconds['ray workers start']:.1f} s"
        )
        print(
            f"ray overhead per unit of the render stage, 1 worker vs single process: "
            f"{(r['ray1'] - r['single']) / n * 1000:+.0f} ms"
        )
        print(f"speed-up of the render stage, 2 workers vs single process: {r['single'] / r['ray2']:.2f}x")
        if "restarted" in kill:
            print(
                f"killed worker restarted (model loaded) in {kill['restarted']:.1f} s; jobs retried: {killed.retried}"
            )
        print(f"wall time the kill added: {killed_wall - two_wall:+.1f} s")
        print(f"all four sites byte-identical: {same}")
        if args.figure:
            draw_timeline(killed.timeline, kill, Path(args.figure))
            print(f"timeline: {args.figure}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
