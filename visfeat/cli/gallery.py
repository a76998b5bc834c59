"""``visfeat gallery build SPEC -o SITE [--dry-run] [--ray [ADDRESS]]``: a static HTML gallery from a TOML spec."""

from __future__ import annotations

import argparse
import time


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("gallery", help="build a static HTML gallery (one page per unit) from a spec")
    cmds = p.add_subparsers(dest="gallery_command", required=True)
    b = cmds.add_parser("build", help="render, find dataset examples, read weights, write the site (resumable)")
    b.add_argument("spec", help="gallery spec (TOML), e.g. gallery/demo.toml")
    b.add_argument("-o", "--out", required=True, help="site folder (created; its .visfeat-cache holds results)")
    b.add_argument("--dry-run", action="store_true", help="print the plan and a time estimate; compute nothing")
    b.add_argument("--device", default=None, help="cpu, cuda, mps (default: cuda if available)")
    b.add_argument("--no-progress", action="store_true")
    b.add_argument(
        "--ray",
        nargs="?",
        const=True,
        default=False,
        metavar="ADDRESS",
        help="run the jobs on Ray worker actors (pip install 'visfeat[ray]'); ADDRESS defaults to RAY_ADDRESS, "
        "then a local cluster. SITE must be storage every worker sees (docs/scale.md)",
    )
    b.add_argument("--workers", type=int, default=None, help="Ray workers (default: one per GPU, else per CPU slot)")
    b.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads per job (Ray workers default to 1); fixed, so the same spec writes the same bytes",
    )
    return p


def run(args: argparse.Namespace) -> int:
    from ..errors import VisfeatError
    from ..gallery import build_gallery, estimate, load_spec
    from ..gallery.build import load_gallery_model
    from ..gallery.plan import make_plan
    from ..images import check_writable

    spec = load_spec(args.spec)  # spec errors before the model loads
    check_writable(args.out)
    for what in ("workers", "threads"):
        if getattr(args, what) is not None and getattr(args, what) < 1:
            raise VisfeatError(f"--{what} must be at least 1, got {getattr(args, what)}")
    # with Ray this process only plans and writes pages: its copy of the model stays on the CPU
    model = load_gallery_model(spec, "cpu" if args.ray is not False and not args.dry_run else args.device)
    if args.dry_run:
        plan = make_plan(spec, model)
        print(plan.describe())
        t = time.perf_counter()
        seconds = estimate(plan, model)
        total = sum(seconds.values())
        print(
            "estimate on this machine (calibrated in %.0f s): " % (time.perf_counter() - t)
            + ", ".join(f"{k} {_fmt(v)}" for k, v in seconds.items() if v)
            + f"; total about {_fmt(total)}"
        )
        return 0
    report = build_gallery(
        spec,
        args.out,
        model=model,
        progress=not args.no_progress,
        threads=args.threads,
        ray=args.ray,
        workers=args.workers,
        device=args.device,
    )
    ran = ", ".join(f"{k} {v}" for k, v in report.ran.items() if v) or "nothing (all results were stored)"
    print(f"ran: {ran}; units rendered {report.units_rendered}, reused {report.units_reused}")
    if args.ray is not False and report.ran:
        print(f"ray: {report.workers} workers; {report.retried} jobs retried after their worker died")
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in report.seconds.items() if v >= 0.05))
    print(f"open {report.index.resolve()}")
    return 0


def _fmt(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"
