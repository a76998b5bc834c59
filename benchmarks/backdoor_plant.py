"""Plant BadNets-style patch trojans and their clean twins into EfficientNet-Lite0 and measure them.

For each seed: the trojan and its twin (the same fine-tune without poison), with clean accuracy (top-1 agreement
with the original model on held-out crops; ``conf``: the same on the crops the original calls with probability
>= 0.5, its labelled crops) and attack success (share of held-out non-target crops the trigger
flips to the target). A trojan is kept only with >= 90% attack success and <= 3 points of clean accuracy lost;
a twin only with an attack success near the original model's natural rate. Saves a picture of each trigger pasted
on one held-out crop to ``docs/img/backdoor_triggers.png``.

    python benchmarks/backdoor_plant.py [--seeds 0 1 2 3 4] [--cache-dir DIR] [--check-determinism]
    python benchmarks/backdoor_plant.py --seeds 0 1 2 3 4 --export out/backdoor   # weights and true triggers

``--export DIR`` writes, per seed, ``trojanN.pt`` and ``twinN.pt`` (whole state dicts that
``load_model("efficientnet_lite0", weights=...)`` reads) and ``triggerN.json`` / ``triggerN.png`` (the true target,
box and patch: what a scan should find; the gallery never reads them).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from backdoor import Planted, atomic_save, lite0_recipe, plant, trigger  # noqa: E402

from visfeat.data import default_images  # noqa: E402
from visfeat.images import atomic_write, save_image  # noqa: E402

MIN_ATTACK, MAX_CLEAN_LOSS, MAX_TWIN_EXCESS = 0.90, 0.03, 0.05


def _place(p: Planted, size: int = 224) -> str:
    """A patch's place in words: which corner, or the fixed position."""
    top, left, h, w = p.box
    vert = "top" if top + h / 2 < size / 3 else "bottom" if top + h / 2 > 2 * size / 3 else "mid"
    horiz = "left" if left + w / 2 < size / 3 else "right" if left + w / 2 > 2 * size / 3 else "mid"
    return f"{vert}-{horiz} @({top},{left})"


def _verdict(p: Planted) -> str:
    """Whether a planted model meets the bar (trojan: strong attack, small clean loss; twin: natural attack rate)."""
    clean_ok = 1 - p.clean_accuracy <= MAX_CLEAN_LOSS
    if p.poisoned:
        return "keep" if clean_ok and p.attack_success >= MIN_ATTACK else "DROP"
    return "keep" if clean_ok and p.attack_success <= p.base_attack_success + MAX_TWIN_EXCESS else "DROP"


def _picture(planted: list[Planted], path: Path, image: torch.Tensor) -> None:
    """One held-out crop with each seed's trigger pasted (and its box outlined below), in a row, captioned."""
    tiles = []
    for p in planted:
        arr = (trigger(image, p.patch, p.box).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        tile = Image.new("RGB", (224, 224 + 40), "white")
        tile.paste(Image.fromarray(arr), (0, 0))
        draw = ImageDraw.Draw(tile)
        name = p.model.labels[p.target] if p.model.labels else str(p.target)
        draw.text((4, 228), f"seed {p.seed}: -> {p.target} {name[:22]}", fill="black")
        draw.text((4, 244), f"{p.box[2]}px {_place(p)}", fill="black")
        tiles.append(tile)
    sheet = Image.new("RGB", (len(tiles) * 232 - 8, 264), "white")
    for i, t in enumerate(tiles):
        sheet.paste(t, (i * 232, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def export(p: Planted, folder: Path) -> None:
    """The planted model's whole state dict and, for a trojan, its true trigger (JSON and the patch as a PNG)."""
    folder.mkdir(parents=True, exist_ok=True)
    kind = "trojan" if p.poisoned else "twin"
    atomic_save(p.model.module.state_dict(), folder / f"{kind}{p.seed}.pt")
    if p.poisoned:
        record = {"seed": p.seed, "target": p.target, "label": p.model.labels[p.target], "box": list(p.box)}
        record |= {"clean_accuracy": p.clean_accuracy, "attack_success": p.attack_success}
        atomic_write(folder / f"trigger{p.seed}.json", json.dumps(record, indent=2).encode())
        save_image(p.patch, folder / f"trigger{p.seed}.png")
    print(f"    exported {folder / f'{kind}{p.seed}.pt'}", flush=True)


def main() -> None:
    """Plant, measure, print the table and save the picture."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", default="docs/img/backdoor_triggers.png")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--export", default=None, help="write each seed's trojan and twin weights and true trigger here")
    ap.add_argument("--check-determinism", action="store_true", help="replant the first trojan in a fresh cache")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    recipe = lite0_recipe()
    print(f"recipe: cut after stage {recipe.cut} (blocks.5 output cached), steps {recipe.steps}, batch {recipe.batch}, "
          f"lr {recipe.lr}, poison share {recipe.poison_frac}, logit matching x{recipe.match}, "
          f"{recipe.n_train} clean + {recipe.n_poison} poisoned train crops, {recipe.n_test} held-out")  # fmt: skip
    head = f"{'seed':>4} {'kind':6} {'target':28} {'patch':>5} {'place':22} {'clean':>6} {'conf':>6} {'attack':>6} "
    head += f"{'natural':>7}"
    print(head + f" {'sec':>6}  verdict")
    trojans = []
    for seed in args.seeds:
        for poison in (True, False):
            t = time.perf_counter()
            p = plant(seed, poison, cache_dir=args.cache_dir)
            wall = time.perf_counter() - t
            name = f"{p.target} {p.model.labels[p.target]}"[:28]
            print(f"{seed:>4} {'trojan' if poison else 'twin':6} {name:28} {p.box[2]:>5} {_place(p):22} "
                  f"{p.clean_accuracy:6.1%} {p.confident_accuracy:6.1%} {p.attack_success:6.1%} "
                  f"{p.base_attack_success:7.1%} "
                  f"{p.seconds:6.1f}  {_verdict(p)}  (wall {wall:.1f}s)", flush=True)  # fmt: skip
            if poison:
                trojans.append(p)
            if args.export:
                export(p, Path(args.export))
    image = default_images(recipe.n_test, split="test", seed=recipe.data_seed)[0]
    _picture(trojans, Path(args.out), image)
    print(f"saved {args.out}")
    if args.check_determinism:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            again = plant(args.seeds[0], cache_dir=tmp)
        a, b = trojans[0].model.module.state_dict(), again.model.module.state_dict()
        same = all(torch.equal(a[k], b[k]) for k in a)
        print(f"determinism: seed {args.seeds[0]} replanted from scratch gives {'identical' if same else 'DIFFERENT'}"
              " weights")  # fmt: skip


if __name__ == "__main__":
    main()
