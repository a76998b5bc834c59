"""``visfeat examples MODEL LAYER [--images DIR] -o DIR``: top images and patches per unit, with heatmaps."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import VisfeatError
from .options import add_model_args, load_model_from_args


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("examples", help="dataset examples: the images and patches that excite each unit most")
    add_model_args(p)
    p.add_argument("layer", help="layer name (see `visfeat layers MODEL`)")
    p.add_argument("--images", default=None, help="folder of images (flat or class sub-folders); default: embedded set")
    p.add_argument("-n", "--n-images", type=int, default=1024, help="crops in the embedded set (without --images)")
    p.add_argument("-k", type=int, default=16, help="examples kept per unit")
    p.add_argument("-o", "--out", required=True, help="output folder: results (resumable cache) and strips")
    p.add_argument("--sae", default=None, help="an SAE file: examples per SAE latent instead of per channel")
    p.add_argument("--units", default="0-15", help="units to draw as PNG strips: '0-15', '3,7,9', 'all' or 'none'")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--no-distinct",
        dest="distinct",
        action="store_false",
        help="allow several crops of one source photo among a unit's top examples (default: one per photo)",
    )
    p.add_argument("--no-progress", action="store_true")
    return p


def parse_units(text: str, n: int) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]; 'all'; 'none' (the range grammar of unit strings). Errors name the valid range."""
    from ..units import parse_index_list

    return [] if text == "none" else parse_index_list(text, n)


def run(args: argparse.Namespace) -> int:
    from ..data import image_dataset
    from ..examples import dataset_examples
    from ..examples.montage import unit_strip
    from ..images import check_writable, save_image

    if args.k < 1:
        raise VisfeatError(f"-k must be at least 1, got {args.k}")
    out = Path(args.out)
    model = load_model_from_args(args)
    info = model.layer(args.layer)
    size = model.input_size[0]
    dataset = image_dataset(args.images, size=size, n=args.n_images)  # empty folder: error before any work
    sae = None
    if args.sae:
        from ..sae import load

        sae = load(args.sae, model=model, layer=args.layer, device=model.device)
    n_units = sae.config.d_sae if sae is not None else info.channels
    units = parse_units(args.units, n_units) if n_units else None  # bad --units: error before any work
    check_writable(out)
    ex = dataset_examples(
        model,
        args.layer,
        dataset,
        k=args.k,
        sae=sae,
        cache=out,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        distinct=args.distinct,
    )
    units = parse_units(args.units, ex.units) if units is None else units
    for u in units:
        save_image(unit_strip(ex, dataset, u), out / f"unit_{u:04d}.png")
    skipped = len(ex.meta.get("skipped", []))
    print(
        f"{ex.units} units x {ex.k} examples over {ex.topk.images_seen} images -> {out}"
        + (f" ({skipped} unreadable images skipped)" if skipped else "")
        + (f"; {len(units)} strips drawn" if units else "")
    )
    return 0
