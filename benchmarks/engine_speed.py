"""Engine speed on the embedded EfficientNet-Lite0 (issue 2's figures).

    python benchmarks/engine_speed.py [--steps 24] [--size 128] [--units 16] [--json out.json]

1. Batching: ``--units`` channels of ``blocks.4`` in one ``render`` call vs one call per channel, same
   steps, parameterization and size (``--size`` px Fourier image, the standard transforms, no upsampling).
   Printed next to the raw floor: a bare forward+backward of Lite0 per image at batch 1 and batch N.
2. Early stop: per-step cost of a channel in a shallow block vs a deep block vs the logits (the forward
   pass stops after the deepest layer the objective needs).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import visfeat as vf
from visfeat import objectives as O
from visfeat import param as P
from visfeat import transforms as T

LAYER = "blocks.4"


def timed_render(model: vf.Model, objectives, steps: int, size: int) -> float:
    """Wall seconds of one render call (after a 1-step warm-up with the same batch)."""
    kw = {"param": P.fourier(size=size), "transforms": T.standard(), "progress": False}
    vf.render(model, objectives, steps=1, **kw)
    t = time.perf_counter()
    vf.render(model, objectives, steps=steps, **kw)
    return time.perf_counter() - t


def raw_floor(model: vf.Model, batch: int, size: int, steps: int) -> float:
    """Seconds per image of a bare forward+backward of the whole network with respect to the input."""
    x = torch.rand(batch, 3, size, size, requires_grad=True)
    model.module(model.preprocess(x)).sum().backward()
    t = time.perf_counter()
    for _ in range(steps):
        model.module(model.preprocess(x)).sum().backward()
    return (time.perf_counter() - t) / steps / batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--units", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = vf.load_model("efficientnet_lite0")
    channels = list(range(0, 7 * args.units, 7))[: args.units]
    units = [O.channel(LAYER, c) for c in channels]

    batched = timed_render(model, units, args.steps, args.size)
    single = sum(timed_render(model, [u], args.steps, args.size) for u in units)
    floor1 = raw_floor(model, 1, args.size, args.steps)
    floorn = raw_floor(model, args.units, args.size, args.steps)
    n = args.units
    print(f"batching: {n} channels of {LAYER}, {args.steps} steps, {args.size} px, {torch.get_num_threads()} threads")
    print(f"  one call for all     {batched:7.2f} s  = {1000 * batched / n / args.steps:6.1f} ms per channel-step")
    print(f"  one call per channel {single:7.2f} s  = {1000 * single / n / args.steps:6.1f} ms per channel-step")
    print(f"  speed-up per channel {single / batched:.2f}x")
    print(
        f"  raw forward+backward per image: batch 1 {1000 * floor1:.1f} ms, batch {n} {1000 * floorn:.1f} ms "
        f"({floor1 / floorn:.2f}x)"
    )

    depth = {}
    for name, obj in [
        ("blocks.1:0", O.channel("blocks.1", 0)),
        ("blocks.4:0", O.channel("blocks.4", 0)),
        ("blocks.6:0", O.channel("blocks.6", 0)),
        ("logit:espresso", O.class_logit("espresso")),
    ]:
        depth[name] = timed_render(model, [obj] * 4, args.steps, args.size) / args.steps / 4
    print(f"early stop: ms per image-step at batch 4, {args.size} px")
    for name, s in depth.items():
        print(f"  {name:<16} {1000 * s:6.1f} ms  ({s / depth['logit:espresso']:.2f} of the logits' cost)")

    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "steps": args.steps,
                    "size": args.size,
                    "units": n,
                    "batched_s": batched,
                    "single_s": single,
                    "speedup": single / batched,
                    "floor_ms": {"1": 1000 * floor1, str(n): 1000 * floorn},
                    "ms_per_image_step": {k: 1000 * v for k, v in depth.items()},
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
