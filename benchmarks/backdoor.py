"""Blind trigger search (``visfeat.scan``) on planted EfficientNet-Lite0 trojans and their clean twins.

Per seed, the trojan and its twin from ``tests/backdoor.py`` (cached under ``~/.cache/visfeat-test-backdoors``) are
scanned without being told the target: with ``base=`` the original ``efficientnet_lite0`` and without a base. The
scan sees only the model and clean held-out crops; the true target, patch and box are used afterwards to score it:

- ``rank``: the true target's rank by anomaly index among the scanned classes (``-`` when the cheap first pass did
  not pick it among the ``--classes`` candidates: scanning all 1000 classes on a CPU is too slow, so every scan here
  is a ``classes=N`` scan), and its anomaly index;
- ``flag``: the classes flagged (for a twin any flag is a false alarm);
- ``IoU``: of the recovered mask (> 0.5) with the planted patch's box; ``ASR``: held-out attack success of the
  recovered trigger (the scan's own held-out half); ``s/cls``: seconds of scan per scanned class.

Per seed it also prints the true patch's attack success pasted at the four corners and the centre instead of its
planted place: a CNN's pooled features make a patch backdoor largely independent of where the patch sits, so the
smallest trigger the scan finds need not sit in the planted box (and IoU with the box measures little).

Baseline: feature visualization of the target logit (``render`` defaults, ``--quick``: the draft preset) on the
trojan and, as a control, on the original model. A rendered picture has no region to score against the box, so
what is measured is whether the planted patch appears anywhere in it: the best normalized cross-correlation of the
patch (at its planted size) over the picture, trojan against original. The pictures are written to ``--out``.

Budget: every scan fits its triggers on 24 crops (8 per step, cycling) and measures them on 24 held-out crops, 100
steps and one round per class: the library's defaults (200 steps, up to 3 rounds) cost 2-6 times more per class on
a CPU.

    python benchmarks/backdoor.py --seeds 0 1 4 5 6 [--classes 4] [--steps 100] [--phases base featvis nobase]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from backdoor import Planted, trigger, twins  # noqa: E402

import visfeat as vf  # noqa: E402
from visfeat.data import default_images  # noqa: E402
from visfeat.images import save_image  # noqa: E402
from visfeat.scan import ScanResult, scan  # noqa: E402

PHOTO_SEED = 4242  # held-out crops for the scan: not the crops the planting trained or measured on


def photos(n: int) -> torch.Tensor:
    """``n`` clean 224 px crops of the test split (another seed than the planting's)."""
    crops = default_images(n, size=224, split="test", seed=PHOTO_SEED)
    return torch.stack([crops[i] for i in range(n)])


def box_iou(mask: torch.Tensor, box: tuple[int, int, int, int]) -> float:
    """IoU of ``mask`` [1, H, W] thresholded at 0.5 with the box (top, left, height, width)."""
    top, left, h, w = box
    true = torch.zeros(mask.shape[-2:], dtype=torch.bool)
    true[top : top + h, left : left + w] = True
    found = mask[0] > 0.5
    union = (found | true).sum()
    return float((found & true).sum() / union) if union else 0.0


def patch_match(image: torch.Tensor, patch: torch.Tensor) -> float:
    """Best normalized cross-correlation of ``patch`` [3, h, w] over ``image`` [3, H, W] (1: the patch is there)."""
    t = patch - patch.mean()
    t = t / t.norm().clamp(min=1e-8)
    x = image[None]
    n = patch[0].numel() * 3
    dot = F.conv2d(x, t[None])[0, 0]
    mean = F.avg_pool2d(x, patch.shape[-2:], stride=1).mean(1)[0]
    sq = F.avg_pool2d(x * x, patch.shape[-2:], stride=1).mean(1)[0]
    std = ((sq - mean * mean).clamp(min=0) * n).sqrt()
    return float((dot / std.clamp(min=1e-3)).max())


def score(result: ScanResult, p: Planted) -> dict:
    """The true target's rank, index, IoU and held-out success in a scan, and what was flagged."""
    ranked = [c.index for c in result.ranked]
    row = {"flagged": [c.index for c in result.flagged], "scanned": len(ranked)}
    row["s_per_class"] = result.seconds / len(ranked)
    if p.target in ranked:
        c = result.ranked[ranked.index(p.target)]
        k = [r.index for r in result.classes].index(p.target)
        row |= {"rank": ranked.index(p.target) + 1, "anomaly": c.anomaly, "success": c.success}
        row["iou"] = box_iou(result.masks[k], p.box) if p.poisoned else None
    top = result.ranked[0]
    row |= {"top": top.index, "top_anomaly": top.anomaly}
    return row


def feature_vis(p: Planted, original: vf.Model, preset: str, out: Path) -> dict:
    """Render the target logit on the trojan and the original model; the patch's best match in each picture."""
    found = {}
    for name, model in (("trojan", p.model), ("original", original)):
        images = vf.render(model, vf.objectives.class_logit(p.target), preset=preset, progress=False).images
        save_image(images[0], out / f"seed{p.seed}_featvis_{name}_class{p.target}.png")
        found[name] = patch_match(images[0].float().cpu(), p.patch)
    return found


def anywhere(p: Planted, x: torch.Tensor) -> str:
    """Attack success of the true patch pasted at the four corners and the centre instead of its planted place
    (photos the trojan does not already call the target): whether the planted box is part of the backdoor at all."""
    h, w = p.patch.shape[-2:]
    size = x.shape[-1]
    places = {"TL": (8, 8), "TR": (8, size - 8 - w), "BL": (size - 8 - h, 8), "BR": (size - 8 - h, size - 8 - w)}
    places["C"] = ((size - h) // 2, (size - w) // 2)
    with torch.no_grad():
        keep = x[p.model(x).argmax(1) != p.target]
        rates = []
        for name, (top, left) in places.items():
            y = trigger(keep, p.patch, (top, left, h, w))
            rates.append(f"{name} {float((p.model(y).argmax(1) == p.target).float().mean()):.2f}")
    return ", ".join(rates)


def _cell(row: dict, key: str, fmt: str) -> str:
    value = row.get(key)
    return "-" if value is None else format(value, fmt)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--classes", type=int, default=None, help="classes scanned (first-pass candidates)")
    ap.add_argument("--steps", type=int, default=None, help="scan steps per round (default 100; --quick 60)")
    ap.add_argument("--rounds", type=int, default=1, help="scan rounds (lam / 3 each) for a class that fails")
    ap.add_argument("--photos", type=int, default=None, help="clean crops, half held out (default 48; --quick 16)")
    phases = ["base", "featvis", "nobase"]
    ap.add_argument("--phases", nargs="+", default=phases, choices=phases,
                    help="what runs, in this order, over every seed: scans with the base, then baselines")  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="fewer photos, steps and classes; draft feature vis")
    ap.add_argument("--out", default="out/backdoor_bench", help="pictures and scan folders")
    ap.add_argument("--cache-dir", default=None, help="planted models' cache (default ~/.cache/...)")
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    n_photos, steps = (16, 60) if args.quick else (48, 100)
    n_photos, steps, rounds = args.photos or n_photos, args.steps or steps, args.rounds
    classes = args.classes or (3 if args.quick else 4)
    preset = "draft" if args.quick else "default"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    original = vf.load_model("efficientnet_lite0")
    x = photos(n_photos)
    print(f"scan: {n_photos} photos (half held out), {steps} steps x {rounds} round(s), classes={classes} "
          f"(first pass; not all 1000), feature vis preset {preset!r}", flush=True)  # fmt: skip
    pairs = {}
    for seed in args.seeds:
        start = time.perf_counter()
        pairs[seed] = pair = twins(seed, cache_dir=args.cache_dir)
        print(f"seed {seed}: planted/loaded in {time.perf_counter() - start:.0f}s; target {pair[0].target}, "
              f"box {pair[0].box}, ASR {pair[0].attack_success:.2f}, clean {pair[0].clean_accuracy:.2f} / "
              f"twin {pair[1].clean_accuracy:.2f}", flush=True)  # fmt: skip
        print(f"   the true patch pasted elsewhere: {anywhere(pair[0], x)}", flush=True)
    rows = []
    for phase in args.phases:  # the scans against the base first: the main result, then the two baselines
        if phase == "featvis":
            for seed, pair in pairs.items():
                found = feature_vis(pair[0], original, preset, out)
                rows.append({"seed": seed, "model": "trojan", "featvis": found})
                print(f"   seed {seed} feature vis patch match:", found, flush=True)
            continue
        for seed, pair in pairs.items():
            for p in pair:
                kind = "trojan" if p.poisoned else "twin"
                folder = out / f"seed{seed}_{kind}_{phase}"
                base = original if phase == "base" else None
                result = scan(p.model, x, base=base, classes=classes, steps=steps, rounds=rounds, progress=False,
                              out=folder)  # fmt: skip
                row = {"seed": seed, "model": kind, "base": phase == "base"} | score(result, p)
                rows.append(row)
                print("  ", row, flush=True)
    print()
    head = f"{'seed':>4} {'model':<6} {'base':<5} {'rank':>5} {'index':>6} {'top':>5} {'flagged':<12} {'IoU':>5} "
    print(head + f"{'ASR':>5} {'s/cls':>6}")
    for r in rows:
        if "featvis" in r:
            continue
        rank = f"{r['rank']}/{r['scanned']}" if "rank" in r else f"-/{r['scanned']}"
        print(f"{r['seed']:>4} {r['model']:<6} {'yes' if r['base'] else 'no':<5} {rank:>5} "
              f"{_cell(r, 'anomaly', '.2f'):>6} {r['top']:>5} {str(r['flagged']):<12} {_cell(r, 'iou', '.2f'):>5} "
              f"{_cell(r, 'success', '.2f'):>5} {r['s_per_class']:>6.1f}")  # fmt: skip
    for r in rows:
        if "featvis" in r:
            fv = r["featvis"]
            print(f"seed {r['seed']}: target-logit feature vis, planted patch's best NCC: trojan {fv['trojan']:.2f}, "
                  f"original {fv['original']:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
