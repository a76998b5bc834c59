"""From lucent's settings to visfeat's, one at a time: which of them moves DINOv2's naturalness score (issue 23).

    python benchmarks/naturalness_ablation.py [--steps 64] [--seed 0] [--threads 2] [--figure fig.png]

All rows run in visfeat's engine on the ten class logits of ``quality_budget.py`` (EfficientNet-Lite0, judged as
there: contrast, saturation, high-frequency share, Lite1 top-1, naturalness with the "all" reference). The first
row is lucent's settings: a 128 px Fourier image (1/f) enlarged to 224, Adam 0.05 constant, the standard
transforms on every step, no low-pass, no coarse-to-fine, no headroom. Each following row changes one setting
to visfeat's; the last is visfeat's own recipe for the budget. It says whether the gap to lucent lies in the
engine or in a setting, and which. ``--figure`` draws each row's first five class pictures, captioned with their
naturalness scores.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from quality_budget import CLASSES, Naturalness, class_ranks, picture_stats, reference_crops
from quality_budget import visfeat as shipped

import visfeat as vf
from visfeat import objectives as O
from visfeat import param as P
from visfeat.figures import labelled_grid
from visfeat.render import FOURIER_GROW, FOURIER_HEADROOM

LUCENT = {"size": 128, "lr": 0.05, "settle": 0.0, "decay": 1.0, "cutoff": None, "grow": 0, "headroom": 0.0}
#: One of visfeat's settings in place of lucent's, per row.
CHANGES = {
    "lucent's settings": {},
    "+ decay 1.05": {"decay": 1.05},
    f"+ coarse to fine ({FOURIER_GROW} steps)": {"grow": FOURIER_GROW},
    "+ low-pass 0.8": {"cutoff": 0.8},
    "+ settle 1/8": {"settle": 0.125},
    "+ lr 0.10": {"lr": 0.10},
    "+ 224 px image": {"size": 224},
    f"+ headroom {FOURIER_HEADROOM:g}": {"headroom": FOURIER_HEADROOM},
}


def settings_kwargs(settings: dict) -> dict:
    """render's keyword arguments for one row's settings."""
    image = {k: settings[k] for k in ("decay", "cutoff", "grow", "headroom")}
    return {
        "param": P.fourier(settings["size"], **image),
        "lr": settings["lr"],
        "settle": settings["settle"],
        "lr_schedule": "constant",
        "views": 1,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--figure", default=None, help="PNG: each row's first five class pictures")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    lite0, lite1 = vf.load_model("efficientnet_lite0"), vf.load_model("efficientnet_lite1")
    nature = Naturalness(reference_crops("all", 256, 0), reference_crops("all", 32, 7))
    units = [O.class_logit(c) for c in CLASSES]
    judged = [lite1.labels.index(c) for c in CLASSES]
    rows = {name: settings_kwargs({**LUCENT, **change}) for name, change in CHANGES.items()}
    rows[f"visfeat's recipe ({args.steps} steps)"] = shipped(lite0, None, args.steps)
    print(f"{'settings':34s} s/class  contr  satur    HF%  L1 t1  natur")
    out, shown, labels = {}, [], []
    for name, kwargs in rows.items():
        res = vf.render(lite0, units, steps=args.steps, seed=args.seed, progress=False, **kwargs)
        seconds = res.seconds / len(units)  # the optimization's own time, as quality_budget reads it
        stats = picture_stats(res.images, 224)
        top1 = sum(r == 1 for r in class_ranks(lite1, res.images, judged))
        scores = nature.scores(res.images)
        out[name] = {**stats, "seconds": seconds, "top1": top1, "naturalness": scores.mean().item()}
        shown.append(F.interpolate(res.images[:5], size=(224, 224), mode="bilinear", antialias=True))  # 128 px rows
        for j, (cls, score) in enumerate(zip(CLASSES[:5], scores[:5].tolist(), strict=True)):
            labels.append(f"{name if j == 0 else ''}\n{cls} {score:.2f}")
        r = out[name]
        print(
            f"{name:34s} {seconds:7.2f} {r['contrast']:6.3f} {r['saturation']:6.3f} {100 * r['hf_noise']:6.2f}"
            f" {top1:3d}/{len(units)} {r['naturalness']:6.2f}",
            flush=True,
        )
    if args.figure:
        labelled_grid(torch.cat(shown), labels, args.figure, cols=5, tile=160, colors=256)
    return out


if __name__ == "__main__":
    main()
