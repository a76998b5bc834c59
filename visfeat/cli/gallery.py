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
    from ..gallery import build_gallery, calibrate, estimate, load_gallery_model, make_plan
    from ..gallery.context import open_spec

    for what in ("workers", "threads"):
        if getattr(args, what) is not None and getattr(args, what) < 1:
            raise VisfeatError(f"--{what} must be at least 1, got {getattr(args, what)}")
    if args.dry_run:
        spec = open_spec(args.spec, args.out)  # spec errors before the model loads
        model = load_gallery_model(spec, args.device)
        plan = make_plan(spec, model)
        print(plan.describe())
        t = time.perf_counter()
        seconds = estimate(plan, model, calibrate(plan, model))
        total = sum(seconds.values())
        print(
            "estimate on this machine (calibrated in %.0f s): " % (time.perf_counter() - t)
            + ", ".join(f"{k} {_fmt(v)}" for k, v in seconds.items() if v)
            + f"; total about {_fmt(total)}"
        )
        return 0
    report = build_gallery(
        args.spec,
        args.out,
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
