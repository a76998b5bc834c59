"""``visfeat render MODEL UNIT [UNIT ...] -o DIR``: one PNG and one JSON sidecar per unit."""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from ..version import __version__
from .options import add_model_args, add_render_options, load_model_from_args, positive_int, render_options


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("render", help="feature-visualize units (batched into one optimization)")
    add_model_args(p)
    p.add_argument(
        "units",
        nargs="+",
        help="unit strings: blocks.4:12, blocks.4:12@3,5, logit:espresso; several: blocks.4:0-15, blocks.4:1,3,7-9, "
        "blocks.4:all",
    )
    p.add_argument("-o", "--out", required=True, help="output folder (created)")
    add_render_options(p)
    p.add_argument(
        "--param", default=None, choices=["fourier", "pixel", "maco"], help="default: render's (Fourier for CNNs)"
    )
    p.add_argument(
        "--size", type=positive_int, default=None, help="image size in pixels (default: the model's input size)"
    )
    p.add_argument("--batch-size", type=positive_int, default=64, help="units optimized together per run")
    p.add_argument("--amp", choices=["bf16", "fp16"], default=None, help="autocast on CUDA")
    p.add_argument(
        "--no-preact",
        action="store_true",
        help="optimize units after their layer's final ReLU/GELU/BN+act (default: its input, so dead units move)",
    )
    p.add_argument("--no-progress", action="store_true")
    return p


def check_syntax(texts: list[str]) -> None:
    """Raise on a malformed unit string before the model loads (``layer:all`` waits: it needs the model)."""
    from ..units import ALL, parse_unit, parse_units

    for text in texts:
        if parse_unit(text).index != ALL:
            for u in parse_units(text):
                u.objective()  # a bad position (@foo) too


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import param
    from ..images import atomic_write, check_writable, save_image
    from ..presets import get_preset
    from ..render import default_param, render
    from ..units import parse_units

    check_syntax(args.units)  # parse errors before any work
    out = Path(args.out)
    check_writable(out)
    model = load_model_from_args(args)
    # ranges expanded; unknown layer or channel out of range: error before optimizing
    units = list(dict.fromkeys(u for text in args.units for u in parse_units(text, model)))
    preact = not args.no_preact
    objectives = [u.objective(model, preact=preact) for u in units]
    p = default_param(model, objectives, args.steps or get_preset(args.preset).steps)
    if args.param or args.size:  # the size of render's default unless --size says otherwise
        p = param.create(args.param or "fourier", size=args.size or p.size)
    out.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(units), args.batch_size):
        chunk = slice(start, start + args.batch_size)
        result = render(
            model,
            objectives[chunk],
            param=p,
            **render_options(args),
            seed=args.seed + start,
            amp=args.amp,
            progress=not args.no_progress,
            preact=preact,
        )
        for i, unit in enumerate(units[chunk]):
            png, js = out / f"{unit.filename()}.png", out / f"{unit.filename()}.json"
            save_image(result.images[i], png)
            sidecar = {
                "unit": str(unit),
                "objective": result.names[i],
                "values": _subsample(result.history[:, i].tolist()),
                "final": result.history[-1, i].item(),
                "settings": result.settings,
                "versions": {"visfeat": __version__, "torch": torch.__version__, "python": platform.python_version()},
            }
            atomic_write(js, json.dumps(sidecar, indent=2).encode())
            print(f"{unit}: {sidecar['final']:.4g} -> {png}")
    return 0


def _subsample(values: list[float], keep: int = 64) -> list[list[float]]:
    """[step, value] pairs, at most ``keep`` of them, always including the last step."""
    stride = max(1, len(values) // keep)
    idx = list(range(0, len(values), stride))
    if idx[-1] != len(values) - 1:
        idx.append(len(values) - 1)
    return [[i, round(values[i], 5)] for i in idx]
