"""Feature accentuation on EfficientNet-Lite0: how far each closeness weight moves the photo and how much it raises
the unit, and the docs figure (``docs/img/accentuate.png``: each unit's two best sample photos on top, their
accentuations below).

For each unit its two top dataset examples (from two different photos) among the embedded image set's first
``--images`` crops (random crops of the photos that scikit-image, scikit-learn and matplotlib ship, as in the demo
gallery) are accentuated at the default steps and lr for every ``--closeness`` weight. Printed per
unit and weight: the unit's activation on the photo (before) and on the accentuation (after), both on the image as
it is (one forward pass) and held out (``visfeat.evaluate``: the mean over 8 random transforms the optimization did
not see), the mean absolute pixel change and the PSNR against the photo, and the seconds.

    python benchmarks/accentuate.py                       # the default weight, and the figure
    python benchmarks/accentuate.py --closeness 0 1 2 3 10 --no-figure
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import visfeat as vf
from visfeat.accentuate import CLOSENESS, LR, STEPS, accentuate, activation, seed_images
from visfeat.data import default_images
from visfeat.figures import labelled_grid
from visfeat.units import parse_unit

UNITS = ["blocks.0:3", "blocks.2:5", "blocks.4:33", "blocks.5:20", "bn2:97", "logit:espresso"]
FIGURE = Path(__file__).resolve().parents[1] / "docs" / "img" / "accentuate.png"


def top_examples(model, unit: str, crops: torch.Tensor, photos: list[str], n: int = 2) -> list[int]:
    """The ``n`` crops that drive ``unit`` most (its own activation, one forward pass), each from another photo."""
    values = activation(model, parse_unit(unit).objective(), crops)
    picked: list[int] = []
    for i in values.argsort(descending=True).tolist():
        if photos[i] not in {photos[j] for j in picked}:
            picked.append(i)
        if len(picked) == n:
            break
    return picked


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", nargs="+", default=UNITS)
    ap.add_argument("--closeness", nargs="+", type=float, default=[CLOSENESS])
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--lr", type=float, default=LR)
    ap.add_argument("--images", type=int, default=256, help="crops of the embedded image set searched")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-figure", action="store_true")
    ap.add_argument("--out", default=str(FIGURE))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = vf.load_model("efficientnet_lite0")
    dataset = default_images(n=args.images, size=model.input_size[0])
    photos = seed_images([dataset[i] for i in range(len(dataset))], model.input_size)
    names = [f"{dataset.source(i).name} #{i}" for i in range(len(dataset))]
    tops, bottoms, labels_top, labels_bottom = [], [], [], []
    print(f"steps {args.steps}, lr {args.lr:g}; before -> after (held out), mean |dpixel|, PSNR dB")
    for unit in args.units:
        pick = top_examples(model, unit, photos, [dataset.source(i).name for i in range(len(dataset))])
        seeds = photos[pick]
        plain = parse_unit(unit).objective()
        held_before = vf.evaluate(model, plain, seeds)
        for w in args.closeness:
            start = time.perf_counter()
            r = accentuate(model, unit, seeds, steps=args.steps, lr=args.lr, closeness=w)
            seconds = time.perf_counter() - start
            a, held_after = r.settings["accentuate"], vf.evaluate(model, plain, r.images)
            for i, k in enumerate(pick):
                print(
                    f"{unit:<15} w {w:<5g} {names[k]:<22} {a['before'][i]:7.2f} -> {a['after'][i]:7.2f}  "
                    f"(held out {held_before[i]:6.2f} -> {held_after[i]:6.2f})  |d| {a['distance'][i]:.4f}  "
                    f"PSNR {a['psnr'][i]:5.1f}"
                )
            print(f"{'':<15} {seconds:.1f} s for {len(pick)} images x {args.steps} steps")
            if w == args.closeness[0]:
                tops += list(seeds)
                bottoms += list(r.images)
                labels_top += [f"{unit}\n{names[k][:18]}: {a['before'][i]:.2f}" for i, k in enumerate(pick)]
                labels_bottom += [f"accentuated: {a['after'][i]:.2f}\n|d| {a['distance'][i]:.3f}" for i in range(2)]
    if not args.no_figure:
        cols = 6  # three units a row: their two photos, and their accentuations below
        images, labels = [], []
        for start in range(0, len(tops), cols):
            images += tops[start : start + cols] + bottoms[start : start + cols]
            labels += labels_top[start : start + cols] + labels_bottom[start : start + cols]
        labelled_grid(torch.stack(images), labels, args.out, cols=cols, tile=176, colors=256)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
