"""Picture quality per compute budget: visfeat's recipes and lucent at 32-512 steps (issue 23).

    python benchmarks/quality_budget.py [--budgets 32 64 128 256 512] [--recipes v0 visfeat nogrow lucent]
        [--classes 10] [--channels 16] [--depths blocks.4 blocks.2] [--judge-lite1-renders]
        [--reference all|native] [--json out.json] [--figure fig.png] [--threads 2] [--smoke]

Units: ten ImageNet class logits and 16 evenly spaced channels of each depth of EfficientNet-Lite0. For every
recipe and budget, the pictures are scored by

- seconds per class / per channel (the batch's optimization time over its size; lucent renders one unit at a
  time, its time at a budget is read from the same 512-step run, so compare at equal step counts);
- RMS contrast (std of Rec. 601 luminance), saturation (mean of max - min over RGB), clipped (share of pixels
  with a channel at 0 or 255 once quantized to 8 bits) and high-frequency noise (share of the luminance
  spectrum's power, mean removed, above half the Nyquist frequency, at the model's input size): class pictures;
- transfer: the target class's top-1 / top-5 on a judge that never took part (Lite0 pictures judged by
  Lite1; with ``--judge-lite1-renders`` the classes are also rendered on Lite1 and judged by Lite0);
- the activation ratio: a channel's spatial mean on its picture at the model's input size, no transforms, over
  its largest spatial mean on 256 random crops of the sample photos; median over the channels, per depth;
- naturalness (DINOv2 ViT-S/14, another family): the picture's position along the Fisher direction that
  separates natural crops from 1/f colour noise in DINOv2's embedding space; 0 = held-out noise, 1 = held-out
  crops (see ``Naturalness`` for why not the nearest-crop cosine). ``--reference native`` scales it to crops
  that are never enlarged (``reference_crops``): the check that it does not reward soft pictures.

``--smoke`` runs a tiny version (2 classes, 2 channels, 4 and 8 steps) for CI; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import visfeat as vf
from visfeat import objectives as O
from visfeat import param as P
from visfeat import transforms as tf
from visfeat.images import random_crops, sample_photos
from visfeat.presets import PRESETS
from visfeat.render import default_param

CLASSES = ["goldfish", "flamingo", "tarantula", "jellyfish", "monarch", "daisy", "lemon", "espresso"]
CLASSES += ["sports car", "volcano"]
BUDGETS = [32, 64, 128, 256, 512]
LUMA = torch.tensor([0.299, 0.587, 0.114])
NOISE_SLOPES = (0.6, 2.0)  # spectral slopes of the naturalness score's noise: flatter to steeper than photos'


# ------------------------------------------------------------------------------------------- recipes
#: A recipe maps (model, layer or None for class logits, steps) to render's keyword arguments.
Recipe = Callable[[vf.Model, str | None, int], dict]


def v0(model: vf.Model, layer: str | None, steps: int) -> dict:
    """The recipe that shipped before issue 23: Adam 0.05 constant, the standard transforms on every step,
    Fourier with 1/f scaling, at any budget."""
    return {"lr": 0.05, "lr_schedule": "constant", "settle": 0.0, "param": P.fourier(model.spec.size[0])}


def visfeat(model: vf.Model, layer: str | None, steps: int) -> dict:
    """What visfeat ships for this budget: the recipe of the preset with the nearest step count (draft for 32
    to 128, default for 256 and 512), at ``steps`` steps and one view."""
    nearest = min(PRESETS.values(), key=lambda p: abs(math.log(p.steps / steps)))
    return {"preset": nearest.name, "views": 1}


def nogrow(model: vf.Model, layer: str | None, steps: int) -> dict:
    """visfeat's recipe with the image at full band from the first step (visfeat 0.2.0): the ablation of
    ``render.FOURIER_GROW``, coarse to fine."""
    unit = O.class_logit(0) if layer is None else O.channel(layer, 0)
    return {**visfeat(model, layer, steps), "param": replace(default_param(model, [unit], steps), grow=0)}


RECIPES: dict[str, Recipe] = {"v0": v0, "visfeat": visfeat, "nogrow": nogrow}


# ------------------------------------------------------------------------------------------ measures
def picture_stats(images: torch.Tensor, size: int) -> dict[str, float]:
    """Contrast, saturation, clipped share and high-frequency share of [N, 3, H, W] pictures in [0, 1]."""
    q = images.clamp(0, 1).mul(255).round()  # what a PNG holds
    clipped = ((q == 0) | (q == 255)).any(1).float().mean().item()
    x = q / 255
    luma = torch.einsum("c,nchw->nhw", LUMA, x)
    sat = (x.max(1).values - x.min(1).values).mean().item()
    y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    y = torch.einsum("c,nchw->nhw", LUMA, y)
    power = torch.fft.fft2(y - y.mean((1, 2), keepdim=True)).abs() ** 2
    fy, fx = torch.fft.fftfreq(size)[:, None], torch.fft.fftfreq(size)[None, :]
    high = ((fx**2 + fy**2).sqrt() > 0.25).float()
    hf = ((power * high).sum((1, 2)) / power.sum((1, 2)).clamp(min=1e-12)).mean().item()
    return {"contrast": luma.std((1, 2)).mean().item(), "saturation": sat, "clipped": clipped, "hf_noise": hf}


def class_ranks(judge: vf.Model, images: torch.Tensor, classes: list[int]) -> list[int]:
    """Rank (1 = top) of each picture's class in the judge's logits, at the judge's input size."""
    x = F.interpolate(images.to(judge.device), size=judge.spec.size, mode="bilinear", align_corners=False)
    with torch.no_grad():
        logits = judge(x).float()
    return [int((logits[i] > logits[i, c]).sum()) + 1 for i, c in enumerate(classes)]


def natural_max(model: vf.Model, layer: str, channels: list[int], crops: torch.Tensor) -> torch.Tensor:
    """Largest spatial mean of each channel over the natural crops (224 px, no transforms)."""
    best = torch.full((len(channels),), -math.inf)
    for chunk in crops.split(32):
        with torch.no_grad():
            act = model.activations(chunk.to(model.device), [layer])[layer].float().cpu()
        best = torch.maximum(best, act[:, channels].mean((2, 3)).max(0).values)
    return best


def direct(model: vf.Model, objectives, images: torch.Tensor) -> torch.Tensor:
    """The objective on the pictures themselves at the model's input size (no random transforms)."""
    return vf.evaluate(model, objectives, images, transforms=tf.resize(model.spec.size), repeats=1)


class Naturalness:
    """Where a picture's DINOv2 embedding lies between 1/f colour noise (0) and natural photo crops (1).

    A model of another family judges. The nearest-crop cosine does not work with the photos that ship: random
    1/f noise lies as close to them as held-out crops do (0.94 vs 0.93; 0.78 vs 0.78 centred), and a flat
    grey image closer still. So the score is the position along the Fisher direction that separates
    natural crops from 1/f^d colour noise (the statistics of a Fourier picture's start, at amplitudes from
    faint to strong) in DINOv2's space, scaled by held-out crops (1) and held-out noise (0): how far a picture
    has left "texture soup" towards a photo, in the eyes of a model that took no part. The noise's spectral
    slope d is drawn from NOISE_SLOPES: with d = 1 alone the direction read mostly the slope, and random
    1/f^1.6 noise scored 0.61, above visfeat's 256-step class pictures (0.53; docs/quality.md)."""

    def __init__(self, crops: torch.Tensor, held: torch.Tensor, n_noise: int = 96, device: str = "cpu") -> None:  # noqa: D107
        self.model = vf.load_model("dinov2_vits14_imgfocus", device=device)
        nat = self.embed(crops)
        noise = self.embed(self.noise(n_noise, seed=7))
        held_nat, held_noise = self.embed(held), self.embed(self.noise(len(held), seed=8))
        pooled = torch.cat([nat - nat.mean(0), noise - noise.mean(0)])
        cov = pooled.T @ pooled / len(pooled)
        cov += 0.1 * cov.diagonal().mean() * torch.eye(len(cov))  # shrinkage: 384 dims, a few hundred samples
        self.w = torch.linalg.solve(cov, nat.mean(0) - noise.mean(0))
        self.lo, self.hi = (held_noise @ self.w).mean().item(), (held_nat @ self.w).mean().item()

    @staticmethod
    def noise(n: int, seed: int, slopes: tuple[float, float] = NOISE_SLOPES) -> torch.Tensor:
        """1/f^d colour noise (visfeat's Fourier parameterization at random), amplitudes log-uniform 0.05-2,
        slopes d uniform over ``slopes``."""
        gen = torch.Generator().manual_seed(seed)
        sd = torch.exp(torch.empty(n).uniform_(math.log(0.05), math.log(2.0), generator=gen))
        slope = torch.empty(n).uniform_(*slopes, generator=gen)
        images = [P.fourier(224, sd=float(s), decay=float(d)) for s, d in zip(sd, slope, strict=True)]
        with torch.no_grad():
            return torch.cat([image.build(1, gen, "cpu")() for image in images])

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
        with torch.no_grad():
            return torch.cat([self.model(c.to(self.model.device)).float().cpu() for c in x.split(32)])

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        return (self.embed(images) @ self.w - self.lo) / (self.hi - self.lo)

    def __call__(self, images: torch.Tensor) -> float:
        return self.scores(images).mean().item() if len(images) else float("nan")


def reference_crops(kind: str, n: int, seed: int, size: int = 224) -> torch.Tensor:
    """The photo crops the naturalness score is scaled to. ``"all"``: sides from 10% to 100% of a photo's short
    side, about two in five of them enlarged to ``size`` and so soft; ``"native"``: never magnified (side >= ``size``
    px), the check that the score does not reward a picture for being soft."""
    photos = list(sample_photos().values())
    if kind == "all":
        return random_crops(photos, n=n, size=size, scales=(0.1, 1.0), seed=seed)
    per = -(-n // len(photos))
    crops = [
        random_crops([p], n=per, size=size, scales=(min(1.0, size / min(p.shape[-2:])), 1.0), seed=seed + 1000 * i)
        for i, p in enumerate(photos)
    ]
    return torch.cat(crops)[torch.randperm(per * len(photos), generator=torch.Generator().manual_seed(seed))[:n]]


# ------------------------------------------------------------------------------------------ renderers
def render_visfeat(recipe: Recipe, model: vf.Model, layer: str | None, units: list, budgets: list[int]) -> dict:
    """{budget: (images, seconds per unit)}: one render per budget (a schedule depends on the step count)."""
    out = {}
    for steps in budgets:
        res = vf.render(model, units, steps=steps, seed=0, progress=False, **recipe(model, layer, steps))
        out[steps] = (res.images, res.seconds / len(units))
    return out


class LucentInput(nn.Module):
    """A visfeat model behind its own preprocessing, so lucent can feed it [0, 1] images."""

    def __init__(self, model: vf.Model) -> None:
        super().__init__()
        import copy

        self.net, self.spec = copy.deepcopy(model.module), model.spec  # lucent leaves its hooks on every module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.spec.preprocess(x))


def render_lucent(model: vf.Model, layer: str | None, ids: list[int], budgets: list[int]) -> dict:
    """lucent's defaults (128 px Fourier, its transforms, Adam 0.05, upsampled to 224), one unit at a time,
    one run per unit to the largest budget; the picture and time at each budget are taken on the way."""
    from lucent.optvis import objectives as lobj
    from lucent.optvis import param as lparam
    from lucent.optvis import render as lrender

    net = LucentInput(model).eval()
    name = "net_" + (layer or "classifier").replace(".", "_")
    images: dict[int, list] = {b: [] for b in budgets}
    seconds: dict[int, float] = dict.fromkeys(budgets, 0.0)
    for i, c in enumerate(ids):
        np.random.seed(i)
        torch.manual_seed(i)
        base, stamps = lobj.channel(name, c), []

        def timed(hook, base=base, stamps=stamps):
            stamps.append(time.perf_counter())
            return base(hook)

        start = time.perf_counter()
        shots = lrender.render_vis(
            net, lobj.Objective(timed), lambda: lparam.image(128), thresholds=tuple(budgets),
            preprocess=False, show_image=False, progress=False,
        )  # fmt: skip
        end = time.perf_counter()
        for b, shot in zip(budgets, shots, strict=True):
            images[b].append(torch.from_numpy(shot).permute(0, 3, 1, 2).float())
            seconds[b] += (stamps[b] if b < len(stamps) else end) - start
    return {b: (torch.cat(images[b]), seconds[b] / len(ids)) for b in budgets}


# ------------------------------------------------------------------------------------------ benchmark
def spaced(n_channels: int, k: int) -> list[int]:
    """k channels evenly spaced over a layer (0, 7, ..., 105 for 16 of 112)."""
    return sorted({round(i * n_channels / k) for i in range(k)})


def layer_width(model: vf.Model, layer: str) -> int:
    with torch.no_grad():
        return model.activations(torch.zeros(1, 3, *model.spec.size, device=model.device), [layer])[layer].shape[1]


def run(args) -> dict:
    lite0, lite1 = (vf.load_model(f"efficientnet_lite{i}", device=args.device) for i in (0, 1))
    n_noise, n_held = (8, 4) if args.smoke else (96, 32)
    crops, held = (reference_crops(args.reference, n, seed) for n, seed in ((args.natural_crops, 0), (n_held, 7)))
    nature = Naturalness(crops, held, n_noise, args.device) if args.naturalness else None
    classes = CLASSES[: args.classes]
    rows: dict = {}
    pictures: dict = {}
    plans = [("lite0", lite0, lite1, None)] if classes else []
    if classes and args.judge_lite1_renders:
        plans.append(("lite1", lite1, lite0, None))
    for layer in args.depths if args.channels else []:
        plans.append(("lite0", lite0, None, layer))
    for recipe in args.recipes:
        for rendered, model, judge, layer in plans:
            if layer is None:
                ids = [model.labels.index(c) for c in classes]
                units = [O.class_logit(c) for c in classes]
            else:
                ids = spaced(layer_width(model, layer), args.channels)
                units = [O.channel(layer, c) for c in ids]
            t = time.perf_counter()
            if recipe == "lucent":
                shots = render_lucent(model, layer, ids, args.budgets)
            else:
                shots = render_visfeat(RECIPES[recipe], model, layer, units, args.budgets)
            print(f"  [{recipe} {rendered} {layer or 'classes'}: {time.perf_counter() - t:.0f} s]", flush=True)
            ref = natural_max(model, layer, ids, crops) if layer else None
            for b, (images, sec) in shots.items():
                row = rows.setdefault(f"{recipe}/{b}", {"recipe": recipe, "steps": b})
                pictures.setdefault(f"{recipe}/{b}", {})[f"{rendered}:{layer or 'classes'}"] = images
                if layer is None:
                    ranks = class_ranks(judge, images, [judge.labels.index(c) for c in classes])
                    top1, top5 = sum(r == 1 for r in ranks), sum(r <= 5 for r in ranks)
                    row[f"{rendered}_classes"] = {"ranks": ranks, "top1": top1, "top5": top5, "seconds_per_unit": sec}
                    if rendered == "lite0":
                        row.update(picture_stats(images, model.spec.size[0]))
                        if nature:
                            row["naturalness"] = nature(images)
                else:
                    ratios = (direct(model, units, images) / ref).tolist()
                    stats = picture_stats(images, model.spec.size[0])
                    row[layer] = {"ratios": ratios, "median": statistics.median(ratios), "min": min(ratios),
                                  "seconds_per_unit": sec, "hf_noise": stats["hf_noise"],
                                  "contrast": stats["contrast"], "clipped": stats["clipped"]}  # fmt: skip
                    if nature:
                        row[layer]["naturalness"] = nature(images)
    return {"rows": rows, "pictures": pictures, "classes": classes, "depths": args.depths if args.channels else []}


def table(res: dict, n_classes: int) -> str:
    depths = res["depths"]
    head = f"{'recipe':<10}{'steps':>6}{'s/class':>8}{'contr':>7}{'satur':>7}{'clip%':>7}{'HF%':>6}"
    head += f"{'L1 t1':>6}{'L1 t5':>6}{'L0 t1':>6}{'natur':>7}"
    for d in depths:
        head += f"{'s/ch':>6}{d + ' ratio':>15}{'HF%':>6}{'clip%':>6}"
    lines = [head]
    for r in sorted(res["rows"].values(), key=lambda r: (r["steps"], r["recipe"])):
        c0, c1 = r.get("lite0_classes"), r.get("lite1_classes")
        line = f"{r['recipe']:<10}{r['steps']:>6}"
        line += f"{c0['seconds_per_unit']:>8.2f}" if c0 else f"{'-':>8}"
        line += "".join(f"{r[k]:>7.3f}" if k in r else f"{'-':>7}" for k in ("contrast", "saturation"))
        line += f"{100 * r['clipped']:>7.2f}{100 * r['hf_noise']:>6.2f}" if "clipped" in r else f"{'-':>13}"
        line += f"{c0['top1']:>4}/{n_classes}{c0['top5']:>3}/{n_classes}" if c0 else f"{'-':>12}"
        line += f"{c1['top1']:>4}/{n_classes}" if c1 else f"{'-':>6}"
        line += f"{r['naturalness']:>7.2f}" if "naturalness" in r else f"{'-':>7}"
        for d in depths:
            if d in r:
                q = r[d]
                line += f"{q['seconds_per_unit']:>6.2f}{q['median']:>9.2f} (>{q['min']:.1f}){100 * q['hf_noise']:>6.2f}"
                line += f"{100 * q['clipped']:>6.2f}"
            else:
                line += f"{'-':>33}"
        lines.append(line)
    return "\n".join(lines)


def figure(res: dict, path: str, recipes: list[str], n_classes: int = 4, n_channels: int = 2) -> None:
    """One row per budget; per recipe, the same units: the first classes, then channels of the first depth."""
    from PIL import Image, ImageDraw

    budgets = sorted({r["steps"] for r in res["rows"].values()})
    cell, gap, left = 96, 12, 64
    block = (n_classes + n_channels) * cell + gap
    canvas = Image.new("RGB", (left + len(recipes) * block, 20 + len(budgets) * (cell + 4)), "white")
    draw = ImageDraw.Draw(canvas)
    for j, rec in enumerate(recipes):
        draw.text((left + j * block, 4), rec, fill="black")
    for i, b in enumerate(budgets):
        y = 20 + i * (cell + 4)
        draw.text((4, y + cell // 2), f"{b} steps", fill="black")
        for j, rec in enumerate(recipes):
            pics = res["pictures"].get(f"{rec}/{b}", {})
            shown = [pics["lite0:classes"][:n_classes]] if "lite0:classes" in pics else []
            if res["depths"] and f"lite0:{res['depths'][0]}" in pics:
                shown.append(pics[f"lite0:{res['depths'][0]}"][:n_channels])
            for u, img in enumerate(torch.cat(shown) if shown else []):
                img = F.interpolate(img[None], size=(cell, cell), mode="bilinear", antialias=True)[0]
                arr = img.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
                canvas.paste(Image.fromarray(arr), (left + j * block + u * cell, y))
    canvas.save(path)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", type=int, nargs="+", default=BUDGETS)
    ap.add_argument("--recipes", nargs="+", default=["v0", "visfeat", "lucent"], help=f"{list(RECIPES)} or lucent")
    ap.add_argument("--classes", type=int, default=10, help="class logits (0: none)")
    ap.add_argument("--channels", type=int, default=16, help="channels per depth (0: none)")
    ap.add_argument("--depths", nargs="+", default=["blocks.4", "blocks.2"])
    ap.add_argument("--judge-lite1-renders", action="store_true", help="also render the classes on Lite1")
    ap.add_argument("--natural-crops", type=int, default=256)
    ap.add_argument("--no-naturalness", dest="naturalness", action="store_false")
    ap.add_argument(
        "--reference",
        choices=["all", "native"],
        default="all",
        help="naturalness reference: crops of 10-100%% of a photo (all) or never magnified (native)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the judges and DINOv2 run there too)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--figure", default=None, help="PNG: the same units at each budget, recipe by recipe")
    ap.add_argument("--smoke", action="store_true", help="tiny run for CI (numbers are not meaningful)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.budgets, args.classes, args.channels, args.depths, args.natural_crops = [4, 8], 2, 2, ["blocks.2"], 8
    for r in args.recipes:
        if r != "lucent" and r not in RECIPES:
            ap.error(f"unknown recipe {r!r}; choose from {list(RECIPES)} or lucent")
    torch.set_num_threads(args.threads)
    tune = getattr(getattr(vf, "cpu", None), "tune_allocator", None)  # keeps freed memory (docs/render.md)
    if tune:
        tune()
    load = os.getloadavg()[0]
    res = run(args)
    print(
        f"quality per budget, EfficientNet-Lite0 ({args.threads} threads, load {load:.1f} -> {os.getloadavg()[0]:.1f})"
    )
    print(table(res, len(res["classes"])))
    if args.figure:
        figure(res, args.figure, args.recipes)
    if args.json:
        out = {k: v for k, v in res.items() if k != "pictures"}
        with open(args.json + ".tmp", "w") as f:
            json.dump(out, f, indent=2)
        os.replace(args.json + ".tmp", args.json)
        torch.save(res["pictures"], os.path.splitext(args.json)[0] + "_pictures.pt")
    return res


if __name__ == "__main__":
    main()
