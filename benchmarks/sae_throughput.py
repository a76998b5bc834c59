"""SAE training throughput on this CPU: activation vectors per second (issue 4's benchmark).

    python benchmarks/sae_throughput.py [--d-in 112] [--expansion 8] [--k 32] [--steps 30]

Times ``visfeat.sae.train`` (the real loop: AuxK bookkeeping, decoder renormalization, logging) on
random vectors for each variant, after 3 warm-up steps, with 1 and 2 threads.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

from visfeat import sae as S


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--d-in", type=int, default=112)
    ap.add_argument("--expansion", type=int, default=8)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    x = torch.randn(args.batch_size * (args.steps + 3), args.d_in)
    print(f"CPU: {_cpu_name()}, {torch.get_num_threads()} threads available, torch {torch.__version__}")
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for variant in S.list_variants():
            sae = S.create(variant, args.d_in, args.expansion * args.d_in, k=args.k)
            cfg = S.TrainConfig(epochs=1, batch_size=args.batch_size, max_steps=3)
            S.train(sae, x[: 3 * args.batch_size], cfg, progress=False)  # warm-up (and init)
            cfg = S.TrainConfig(epochs=1, batch_size=args.batch_size, max_steps=args.steps)
            log = S.train(sae, x, cfg, progress=False)
            print(
                f"{variant:9s} d_in={args.d_in} d_sae={sae.config.d_sae} k={args.k} batch={args.batch_size} "
                f"threads={threads}: {log.vectors_per_second:8.0f} vectors/s ({log.steps} steps, {log.seconds:.1f} s)"
            )


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
