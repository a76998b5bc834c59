"""The pictures of the engine docs (docs/param.md, docs/render.md, docs/transforms.md, docs/objectives.md).

    python benchmarks/doc_figures.py [--steps 128] [--threads 2] [--out docs/img]

Everything is rendered with the embedded EfficientNet-Lite0 on the CPU, with short runs (the point of each
picture is a comparison, not the best possible image):

- ``param_compare.png``: one channel with the pixel, Fourier and MACO parameterizations (same steps, same seed).
- ``depth.png``: channels from shallow to deep blocks, and a class logit, rendered together in one batch.
- ``objectives.png``: one channel as ``channel`` (mean over positions), ``neuron`` (centre position) and
  ``channel - diversity`` over a batch of three.
- ``transforms.png``: one photo through each random transform (two draws each).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import visfeat as vf
from visfeat import objectives as O
from visfeat import param as P
from visfeat import transforms as T
from visfeat.figures import labelled_grid
from visfeat.images import sample_photos

CHANNEL = ("blocks.4", 33)  # the channel of param_compare.png and objectives.png
DEPTH = ["blocks.1:10", "blocks.2:20", "blocks.3:40", "blocks.4:33", "blocks.5:100", "blocks.6:200", "logit:espresso"]


def _timed(label: str, fn):
    t = time.perf_counter()
    out = fn()
    print(f"{label}: {time.perf_counter() - t:.0f} s")
    return out


def param_compare(model: vf.Model, steps: int, out: Path) -> None:
    layer, ch = CHANNEL
    params = {"pixel": P.pixel(128), "fourier": P.fourier(128), "maco": P.maco(128)}
    images, labels = [], []
    for name, p in params.items():
        r = _timed(name, lambda p=p: vf.render(model, O.channel(layer, ch), param=p, steps=steps, progress=False))
        images.append(r.images)
        labels.append(f"{name}\nobjective {r.final.item():.2f}")
    labelled_grid(torch.cat(images), labels, out / "param_compare.png", cols=3, tile=200)


def depth(model: vf.Model, steps: int, out: Path) -> None:
    r = _timed("depth", lambda: vf.render(model, DEPTH, steps=steps, progress=False))
    labelled_grid(r.images, DEPTH, out / "depth.png", cols=len(DEPTH), tile=160)


def objectives(model: vf.Model, steps: int, out: Path) -> None:
    layer, ch = CHANNEL
    units = [f"{layer}:{ch}", f"{layer}:{ch}@center"]
    a = _timed("channel/neuron", lambda: vf.render(model, units, steps=steps, progress=False))
    div = O.channel(layer, ch) - 10.0 * O.diversity(layer)
    b = _timed("diversity", lambda: vf.render(model, div, batch=3, steps=steps, progress=False))
    labels = [f"channel {layer}:{ch}", f"neuron {layer}:{ch}@center"] + [f"- diversity, image {i}" for i in range(3)]
    labelled_grid(torch.cat([a.images, b.images]), labels, out / "objectives.png", cols=5, tile=160)


def transforms(out: Path) -> None:
    photo = sample_photos()["coffee"]
    s = min(photo.shape[-2:])
    photo = F.interpolate(photo[None, :, :s, :s], size=(128, 128), mode="bilinear", antialias=True)
    batch = photo.repeat(2, 1, 1, 1)
    g = torch.Generator().manual_seed(0)
    shown = {
        "pad(12)": T.pad(12),
        "jitter(16)": T.jitter(16),
        "random_scale": T.random_scale([0.7, 1.3]),
        "random_rotate": T.random_rotate([-30, 30]),
        "crops_with_noise": T.crops_with_noise((0.25, 0.6), 0.1),
        "standard()": T.standard(),
        "maco_crops()": T.maco_crops(),
    }
    images, labels = [photo], ["original"]
    for name, t in shown.items():
        y = t(batch, g).clamp(0, 1)
        for i in range(2):
            images.append(F.interpolate(y[i : i + 1], size=(128, 128), mode="bilinear", align_corners=False))
            labels.append(f"{name} #{i + 1}")
    labelled_grid(torch.cat(images), labels, out / "transforms.png", cols=5, tile=128)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="docs/img")
    ap.add_argument("--only", nargs="*", default=["transforms", "param", "depth", "objectives"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = vf.load_model("efficientnet_lite0")
    if "transforms" in args.only:
        transforms(out)
    if "param" in args.only:
        param_compare(model, args.steps, out)
    if "depth" in args.only:
        depth(model, args.steps, out)
    if "objectives" in args.only:
        objectives(model, args.steps, out)
    print(f"wrote {', '.join(args.only)} into {out}")


if __name__ == "__main__":
    main()
