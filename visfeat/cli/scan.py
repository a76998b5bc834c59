"""``visfeat scan MODEL [--base MODEL] --images DIR -o OUT``: trigger search (Neural Cleanse) over the model's classes
(:func:`visfeat.scan.scan`): ``OUT/scan.json`` and per suspected class its mask, pattern, trigger and pasted photos."""

from __future__ import annotations

import argparse

from .options import add_model_args, load_model_from_args, positive_int


def add_parser(sub) -> argparse.ArgumentParser:
    from ..scan import LAM, STEPS

    p = sub.add_parser("scan", help="search each class's smallest trigger patch; flag likely backdoor targets")
    add_model_args(p)
    p.add_argument("--base", help="the model before a change (same architecture): find what the change added")
    p.add_argument("--base-weights", help="local weights file of the base (without --base: MODEL with these weights)")
    p.add_argument("--images", help="folder of clean photos (default: the embedded set); half are held out")
    p.add_argument("--n-images", type=positive_int, default=64, help="clean photos to read (default 64)")
    p.add_argument("-o", "--out", required=True, help="output folder (created)")
    p.add_argument(
        "--classes",
        default=None,
        help="N (the N likeliest targets by a cheap first pass) or a list '3,7,10-12' (default: every class)",
    )
    p.add_argument("--steps", type=positive_int, default=STEPS, help=f"steps per round (default {STEPS})")
    p.add_argument("--lam", type=float, default=LAM, help=f"mask penalty per image share (default {LAM:g})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    return p


def _classes(text: str | None) -> list[int] | int | None:
    """``--classes``: None, a count N, or a list of class indices."""
    from ..units import parse_index_list

    if text is None:
        return None
    if text.strip().isdigit():
        return int(text)
    return parse_index_list(text, of="classes")


def _photos(args: argparse.Namespace, size: int):
    """The clean photos [N, 3, S, S]: ``--n-images`` of the folder (or the embedded set's test crops)."""
    import torch

    from ..data import default_images, image_dataset, iter_batches

    data = image_dataset(args.images, size=size) if args.images else default_images(args.n_images, size, "test")
    return torch.cat([imgs for _, imgs in iter_batches(data, 64, stop=args.n_images)])


def run(args: argparse.Namespace) -> int:
    from ..errors import VisfeatError
    from ..images import check_writable
    from ..models import AUTO, load_model
    from ..scan import scan

    classes = _classes(args.classes)
    check_writable(args.out)
    model = load_model_from_args(args)
    base = None
    if args.base or args.base_weights:
        base = load_model(args.base or args.model, weights=args.base_weights, device=args.device or AUTO)
    h, w = model.input_size
    if h != w:
        raise VisfeatError(f"scan reads square photos; {model.name} takes {h}x{w}: call visfeat.scan.scan in Python")
    photos = _photos(args, h)
    result = scan(
        model,
        photos,
        base=base,
        classes=classes,
        steps=args.steps,
        lam=args.lam,
        seed=args.seed,
        progress=not args.no_progress,
        out=args.out,
    )
    for c in result.ranked[:5]:
        flag = "FLAGGED" if c.flagged else "       "
        print(
            f"{flag} class {c.index} ({c.name}): anomaly {c.anomaly:.2f}, mask {100 * c.mask_size:.2f}% of the image, "
            f"held-out success {100 * c.success:.0f}%"
        )
    print(f"{len(result.flagged)} flagged of {len(result.classes)} scanned -> {args.out}/scan.json")
    return 0
