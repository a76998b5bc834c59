"""How far can one channel go? Upper references for the render-quality bar of ``benchmarks/quality.py``.

    python benchmarks/channel_ceiling.py [--layer blocks.4] [--channel 70] [--steps 300] [--long 1000]
        [--views K] [--supersample S]

For one channel of the embedded EfficientNet-Lite0, each line is a ratio to the channel's largest
activation over random crops of the sample photos (``quality.natural_max``):

- best flat colour: the channel on a uniform image, over an 8x8x8 grid of RGB colours;
- no-transform optimum: the image is optimized at the model's input size with no transforms at all, and
  scored on itself. This is the most gradient ascent gets from any image, with no robustness asked for;
  it is also scored held-out, to show what that costs;
- robust optimizations, ``--long`` steps: Fourier at 224 px (render's default param) with the default
  transforms, and with reflection-padded ones; pixels with reflection padding;
- with ``--views K``: the default param and transforms, K random views of the image per step (the
  gradient of K transformed copies, an expectation-over-transforms estimate), ``--long`` steps;
- with ``--supersample S``: the default transforms on a Fourier image S times the model's input size
  (the transforms end with a resize to the input size), ``--long`` steps, and with K views if asked.

Each optimized image is scored four ways: ``direct`` (the image as the model sees it, the way the photo
crops are scored), held-out with the standard transforms (grey padding, ``visfeat.evaluate``'s default)
and held-out with reflection padding. The transforms act in the image's own pixels, so on a supersampled
image their pad and jitter are 1/S as large in the model's pixels; ``held-out@input`` scores the image
resized to the model's input size with the standard transforms (the same as held-out for an image at the
input size).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
from quality import natural_max

import visfeat as vf
from visfeat import objectives as O
from visfeat import param as P
from visfeat import transforms as T
from visfeat.render import default_param


def reflect_standard(size: int) -> T.Transform:
    """Lucid's robustness set with reflection padding instead of grey, then a resize to ``size``."""
    return T.compose(T.standard("reflect"), T.resize(size))


def best_flat_colour(model: vf.Model, layer: str, channel: int, levels: int = 8) -> tuple[float, list[float]]:
    """Largest spatial mean of the channel over uniform images of ``levels``^3 colours."""
    size = model.spec.size
    g = torch.linspace(0, 1, levels)
    colours = torch.cartesian_prod(g, g, g)
    best, arg = -float("inf"), None
    for chunk in colours.split(64):
        x = chunk[:, :, None, None].expand(-1, 3, *size).contiguous()
        with torch.no_grad():
            v = model.activations(x, [layer])[layer][:, channel].mean((1, 2))
        i = int(v.argmax())
        if v[i] > best:
            best, arg = float(v[i]), chunk[i].tolist()
    return best, arg


def scores(model: vf.Model, unit: O.Objective, image: torch.Tensor, size: int) -> dict[str, float]:
    return {
        "direct": float(vf.evaluate(model, [unit], image, transforms=T.resize(size), repeats=1)),
        "heldout": float(vf.evaluate(model, [unit], image)),
        "heldout_reflect": float(vf.evaluate(model, [unit], image, transforms=reflect_standard(size))),
        "heldout_input": float(vf.evaluate(model, [unit], T.resize(size)(image, torch.Generator()))),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", default="blocks.4")
    ap.add_argument("--channel", type=int, default=70)
    ap.add_argument("--steps", type=int, default=300, help="steps of the no-transform optimum")
    ap.add_argument("--long", type=int, default=1000, help="steps of the robust optimizations")
    ap.add_argument("--views", type=int, default=0, help="also run K views per step (0: skip)")
    ap.add_argument("--supersample", type=int, default=1, help="also run a Fourier image S times the input size")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    vf.cpu.tune_allocator()  # this process is ours; the views batch stops page-faulting
    model = vf.load_model("efficientnet_lite0")
    size = model.spec.size[0]
    nat = float(natural_max(model, args.layer, [args.channel]))
    unit = O.channel(args.layer, args.channel)
    print(f"{args.layer}:{args.channel}: photos' largest crop activation {nat:.3f}")
    flat, colour = best_flat_colour(model, args.layer, args.channel)
    print(f"  best flat colour {[round(c, 2) for c in colour]}: {flat:.3f} = {flat / nat:.2f}x")
    runs = [  # name, param, transforms, steps, views
        ("no transforms, pixels", P.pixel(size=size), T.resize(size), args.steps, 1),
        ("no transforms, Fourier", P.fourier(size=size), T.resize(size), args.steps, 1),
        ("Fourier 224 (default)", default_param(model), None, args.long, 1),
        ("Fourier 224 + reflect", P.fourier(size=size), reflect_standard(size), args.long, 1),
        ("pixels 224 + reflect", P.pixel(size=size), reflect_standard(size), args.long, 1),
    ]
    big = [size * args.supersample] if args.supersample > 1 else []
    runs += [(f"Fourier {px}", replace(default_param(model), size=px), None, args.long, 1) for px in big]
    if args.views > 1:
        for px in [size, *big]:
            param = replace(default_param(model), size=px)
            runs.append((f"Fourier {px}, {args.views} views", param, None, args.long, args.views))
    print(
        f"  {'optimization':<24} {'steps':>5} {'direct':>7} {'held-out':>8} {'reflect':>8} {'held-out@input':>14}"
        f" {'seconds':>7}"
    )
    for name, param, transforms, steps, views in runs:
        t = time.perf_counter()
        res = vf.render(model, unit, param=param, transforms=transforms, steps=steps, views=views, progress=False)
        s = {k: v / nat for k, v in scores(model, unit, res.images, size).items()}
        print(
            f"  {name:<24} {steps:>5} {s['direct']:>6.2f}x {s['heldout']:>7.2f}x {s['heldout_reflect']:>7.2f}x"
            f" {s['heldout_input']:>13.2f}x {time.perf_counter() - t:>7.0f}"
        )


if __name__ == "__main__":
    main()
