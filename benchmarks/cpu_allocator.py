"""What ``visfeat.cpu.tune_allocator`` is worth: render cost and page faults per step against batch size.

    python benchmarks/cpu_allocator.py [--batches 1 4 8 16 32] [--steps 16] [--rounds 3] [--threads 2]

Renders ``blocks.4`` channels of EfficientNet-Lite0 with the render defaults (224 px Fourier image,
standard transforms), each batch size in fresh processes (what a user's process rendering
that batch sees: glibc adapts its mmap threshold to what it has seen, so earlier work would blur the
picture), once with glibc's malloc as it is and once tuned. Prints ms per unit-step and minor page faults
per step, medians of ``--rounds`` renders after a 1-step warm-up render.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def measure(tuned: bool, batch: int, steps: int, rounds: int, threads: int) -> tuple[float, float]:
    """In this process: (ms per unit-step, minor page faults per step), medians over ``rounds`` renders."""
    import torch

    import visfeat as vf
    from visfeat import objectives as O

    if tuned and not vf.cpu.tune_allocator():
        raise SystemExit("tune_allocator() had no effect here (not glibc)")
    torch.set_num_threads(threads)
    model = vf.load_model("efficientnet_lite0")
    units = [O.channel("blocks.4", c) for c in range(batch)]
    vf.render(model, units, steps=1, progress=False)  # warm-up: first allocations, oneDNN kernels
    ms, faults = [], []
    for _ in range(rounds):
        f0, t = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        vf.render(model, units, steps=steps, progress=False)
        ms.append(1000 * (time.perf_counter() - t) / steps / batch)
        faults.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / steps)
    return statistics.median(ms), statistics.median(faults)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--worker", choices=["plain", "tuned"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:  # one measurement in its own process: the setting is process-wide
        print(json.dumps(measure(args.worker == "tuned", args.batches[0], args.steps, args.rounds, args.threads)))
        return
    res: dict[str, dict[int, list[float]]] = {"plain": {}, "tuned": {}}
    for b in args.batches:
        for mode in res:
            cmd = [sys.executable, __file__, "--worker", mode, "--batches", str(b), "--steps", str(args.steps)]
            cmd += ["--rounds", str(args.rounds), "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            res[mode][b] = json.loads(out.splitlines()[-1])
    print(f"blocks.4 channels of EfficientNet-Lite0, render defaults, {args.steps} steps, {args.threads} threads")
    print(f"  {'batch':>5} {'plain ms':>9} {'faults':>9} {'tuned ms':>9} {'faults':>7} {'speed-up':>8}")
    for b in args.batches:
        (pm, pf), (tm, tf) = res["plain"][b], res["tuned"][b]
        print(f"  {b:>5} {pm:>9.1f} {pf:>9.0f} {tm:>9.1f} {tf:>7.0f} {pm / tm:>7.2f}x")
    print("  (ms per unit-step; minor page faults per step)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
