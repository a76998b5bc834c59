"""Render-default quality on the real EfficientNet-Lite0 (issue 2's figures).

    python benchmarks/quality.py [--steps N] [--json out.json] [--grid docs/img/class_logits.png]
        [--views K] [--lr-schedule cosine] [--channels 70 56] [--device cuda] [--amp bf16]

1. Class logits of ten ImageNet classes, rendered with the defaults in one batch: the rank of the
   target class on EfficientNet-Lite0 itself and on EfficientNet-Lite1 (another model).
2. 16 channels of ``blocks.4``: held-out objective of the visualization divided by the largest
   activation of that channel over random crops of the sample photos.

``--views`` and ``--lr-schedule`` pass through to ``render`` for both parts (the issue's bar is about the
defaults; these measure what more compute buys). ``--channels`` scores other channels of ``blocks.4``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

import visfeat as vf
from visfeat import objectives as O
from visfeat import transforms as tf
from visfeat.cli import positive_int
from visfeat.images import random_crops, sample_photos

CLASSES = [
    "goldfish",
    "flamingo",
    "tarantula",
    "jellyfish",
    "monarch",
    "daisy",
    "lemon",
    "espresso",
    "sports car",
    "volcano",
]
CHANNEL_LAYER = "blocks.4"
CHANNELS = list(range(0, 112, 7))  # 16 channels, evenly spaced, fixed in advance


def class_ranks(model: vf.Model, images: torch.Tensor, classes: list[int]) -> list[int]:
    """Rank (1 = top) of each image's target class in the model's logits, at its input size."""
    x = F.interpolate(images.to(model.device), size=model.spec.size, mode="bilinear", align_corners=False)
    with torch.no_grad():
        logits = model(x).float()
    return [int((logits[i] > logits[i, c]).sum()) + 1 for i, c in enumerate(classes)]


def natural_max(model: vf.Model, layer: str, channels: list[int], n_crops: int = 256, seed: int = 0) -> torch.Tensor:
    """Largest channel objective (spatial mean) over random crops of the sample photos, at 224 px."""
    crops = random_crops(sample_photos().values(), n=n_crops, size=224, scales=(0.1, 1.0), seed=seed)
    best = torch.full((len(channels),), -float("inf"))
    for chunk in crops.split(32):
        with torch.no_grad():
            act = model.activations(chunk.to(model.device), [layer])[layer].float()
        best = torch.maximum(best, act[:, channels].mean((2, 3)).max(0).values.cpu())
    return best


def run_classes(steps: int, seed: int, device: str = "cpu", **options) -> dict:
    """``options`` go to ``render`` (views, lr_schedule, amp)."""
    lite0 = vf.load_model("efficientnet_lite0").to(device)
    lite1 = vf.load_model("efficientnet_lite1").to(device)
    idx = [lite0.labels.index(c) for c in CLASSES]
    t = time.perf_counter()
    result = vf.render(lite0, [O.class_logit(c) for c in CLASSES], steps=steps, seed=seed, **options)
    seconds = time.perf_counter() - t
    r0 = class_ranks(lite0, result.images, idx)
    r1 = class_ranks(lite1, result.images, idx)
    return {
        "classes": CLASSES,
        "rank_lite0": r0,
        "rank_lite1": r1,
        "top1_lite0": sum(r == 1 for r in r0),
        "top1_lite1": sum(r == 1 for r in r1),
        "seconds": seconds,
        "images": result.images,
    }


def run_channels(steps: int, seed: int, channels: list[int] = CHANNELS, device: str = "cpu", **options) -> dict:
    """``options`` go to ``render`` (views, lr_schedule, amp)."""
    model = vf.load_model("efficientnet_lite0").to(device)
    nat = natural_max(model, CHANNEL_LAYER, channels)
    t = time.perf_counter()
    units = [O.channel(CHANNEL_LAYER, c) for c in channels]
    result = vf.render(model, units, steps=steps, seed=seed, **options)
    seconds = time.perf_counter() - t
    held = vf.evaluate(model, units, result.images)
    # scored like the photo crops: the image itself at the model's input size, no transforms
    direct = vf.evaluate(model, units, result.images, transforms=tf.resize(model.spec.size), repeats=1)
    ratios = (held / nat).tolist()
    return {
        "direct_ratios": (direct / nat).tolist(),
        "channels": channels,
        "natural_max": nat.tolist(),
        "heldout": held.tolist(),
        "ratios": ratios,
        "median": statistics.median(ratios),
        "min": min(ratios),
        "seconds": seconds,
        "images": result.images,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=positive_int, default=None, help="render steps (default: render's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--grid", default=None, help="write the class-logit picture grid here")
    ap.add_argument("--channel-grid", default=None, help="write the channel picture grid here")
    ap.add_argument("--only", choices=["classes", "channels"], default=None)
    ap.add_argument("--views", type=positive_int, default=1, help="random transforms per image and step")
    ap.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant")
    ap.add_argument("--channels", type=int, nargs="+", default=CHANNELS, help=f"channels of {CHANNEL_LAYER}")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, mps")
    ap.add_argument("--amp", choices=["bf16", "fp16"], default=None, help="autocast on CUDA")
    args = ap.parse_args()
    steps = args.steps or vf.render.__kwdefaults__["steps"]
    options = {"views": args.views, "lr_schedule": args.lr_schedule, "device": args.device, "amp": args.amp}
    out = {"steps": steps, **options}
    recipe = f"{steps} steps" + (f" of {args.views} views" if args.views > 1 else "") + f", {args.lr_schedule} lr"
    if args.only in (None, "classes"):
        c = run_classes(steps, args.seed, **options)
        print(f"class logits ({recipe}, {c['seconds']:.0f} s for 10 in one batch)")
        print(f"  {'class':<12} rank@Lite0 rank@Lite1")
        for name, a, b in zip(c["classes"], c["rank_lite0"], c["rank_lite1"], strict=True):
            print(f"  {name:<12} {a:>10} {b:>10}")
        print(f"  top-1: Lite0 {c['top1_lite0']}/10, Lite1 {c['top1_lite1']}/10")
        if args.grid:
            from visfeat.figures import labelled_grid

            labels = [
                f"{n}\nLite0 #{a}  Lite1 #{b}"
                for n, a, b in zip(c["classes"], c["rank_lite0"], c["rank_lite1"], strict=True)
            ]
            labelled_grid(c["images"], labels, args.grid, cols=5)
        out["classes"] = {k: v for k, v in c.items() if k != "images"}
    if args.only in (None, "channels"):
        ch = run_channels(steps, args.seed, args.channels, **options)
        print(f"channels of {CHANNEL_LAYER} ({recipe}, {ch['seconds']:.0f} s for {len(args.channels)} in one batch)")
        rows = zip(ch["channels"], ch["natural_max"], ch["heldout"], ch["ratios"], ch["direct_ratios"], strict=True)
        for c, n, h, r, d in rows:
            print(f"  {CHANNEL_LAYER}:{c:<4} photos {n:7.3f}  held-out {h:7.3f}  ratio {r:5.2f}x  direct {d:5.2f}x")
        print(f"  held-out: median {ch['median']:.2f}x, min {ch['min']:.2f}x")
        d = ch["direct_ratios"]
        print(f"  direct (scored like the photo crops): median {statistics.median(d):.2f}x, min {min(d):.2f}x")
        if args.channel_grid:
            from visfeat.figures import labelled_grid

            labels = [f"{CHANNEL_LAYER}:{c}  {r:.1f}x" for c, r in zip(ch["channels"], ch["ratios"], strict=True)]
            labelled_grid(ch["images"], labels, args.channel_grid, cols=8)
        out["channels"] = {k: v for k, v in ch.items() if k != "images"}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
