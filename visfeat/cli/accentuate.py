"""``visfeat accentuate MODEL UNIT IMAGE... -o DIR``: each photo raised for the unit while kept close to it
(:func:`visfeat.accentuate.accentuate`): ``DIR/<stem>_accentuated.png`` per photo and ``DIR/accentuate.json``."""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from .options import add_model_args, load_model_from_args, positive_int


def add_parser(sub) -> argparse.ArgumentParser:
    from ..accentuate import CLOSENESS, LR, STEPS

    p = sub.add_parser("accentuate", help="show what a unit responds to in your photos (feature accentuation)")
    add_model_args(p)
    p.add_argument("unit", help="one unit string: blocks.4:12, blocks.4:12@3,5, logit:espresso")
    p.add_argument("images", nargs="+", help="image files or folders (each centre-cropped to the model's input)")
    p.add_argument("-o", "--out", required=True, help="output folder (created)")
    p.add_argument("--steps", type=positive_int, default=STEPS, help=f"optimization steps (default {STEPS})")
    p.add_argument("--lr", type=float, default=LR, help=f"learning rate (default {LR:g})")
    p.add_argument(
        "--closeness",
        type=float,
        default=CLOSENESS,
        help=f"weight of the squared pixel distance to the photo (default {CLOSENESS:g}; 0: none, larger: closer)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--no-preact",
        action="store_true",
        help="raise the unit after its layer's final ReLU/GELU/BN+act (default: its input, so a silent unit moves)",
    )
    p.add_argument("--no-progress", action="store_true")
    return p


def _files(paths: list[str]) -> list[Path]:
    """The image files named (a folder: its images), each once, in order."""
    from ..errors import VisfeatError
    from ..images import list_image_files

    files: list[Path] = []
    for text in paths:
        p = Path(text)
        if p.is_dir():
            files += list_image_files(p)
        elif p.is_file():
            files.append(p)
        else:
            raise VisfeatError(f"image {text} does not exist; give image files or a folder of images")
    return list(dict.fromkeys(files))


def _stems(files: list[Path]) -> list[str]:
    """An output name per file: its stem, numbered where two files share one."""
    seen: dict[str, int] = {}
    out = []
    for f in files:
        n = seen.get(f.stem, 0)
        seen[f.stem] = n + 1
        out.append(f.stem if n == 0 else f"{f.stem}_{n + 1}")
    return out


def run(args: argparse.Namespace) -> int:
    import torch

    from ..accentuate import accentuate
    from ..images import atomic_write, check_writable, load_image, save_image
    from ..units import parse_unit
    from ..version import __version__

    unit = parse_unit(args.unit)
    unit.objective()  # a bad position (@foo): an error before the model loads
    files = _files(args.images)
    out = Path(args.out)
    check_writable(out)
    model = load_model_from_args(args)
    unit.validate(model)
    photos = [load_image(f) for f in files]
    result = accentuate(
        model,
        str(unit),
        photos,
        steps=args.steps,
        lr=args.lr,
        closeness=args.closeness,
        seed=args.seed,
        preact=not args.no_preact,
        progress=not args.no_progress,
    )
    a = result.settings["accentuate"]
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (f, stem) in enumerate(zip(files, _stems(files), strict=True)):
        png = out / f"{stem}_accentuated.png"
        save_image(result.images[i], png)
        row = {"image": str(f), "file": png.name, "before": a["before"][i], "after": a["after"][i]}
        rows.append(row | {"distance": a["distance"][i], "psnr": a["psnr"][i]})
        change = f"{row['before']:.4g} -> {row['after']:.4g}, mean |dpixel| {a['distance'][i]:.4f}"
        print(f"{f.name}: {unit} {change} -> {png}")
    summary = {
        "unit": str(unit),
        "objective": result.names[0],
        "images": rows,
        "settings": {k: v for k, v in result.settings.items() if k != "accentuate"} | {"closeness": args.closeness},
        "versions": {"visfeat": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    atomic_write(out / "accentuate.json", json.dumps(summary, indent=2).encode())
    return 0
