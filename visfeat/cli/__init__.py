"""The ``visfeat`` command. Each sub-command lives in its own module with ``add_parser`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import VisfeatError

#: Sub-command modules (inside visfeat.cli), in the order ``--help`` lists them.
COMMANDS = ["gallery", "render", "layers", "circuit", "examples", "sae"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visfeat", description="Look inside vision models.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        mod = importlib.import_module(f"{__name__}.{name.replace('-', '_')}")
        p = mod.add_parser(sub)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..cpu import tune_allocator

    tune_allocator()  # this process is ours: large CPU batches stop page-faulting (see visfeat.cpu)
    try:
        return int(args._run(args) or 0)
    except VisfeatError as e:
        print(f"visfeat {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"visfeat {args.command}: interrupted; finished outputs are kept", file=sys.stderr)
        return 130


def _version() -> str:
    from .. import __version__

    return f"visfeat {__version__}"


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The MODEL argument and its options, shared by every sub-command that loads a model."""
    p.add_argument("model", help="efficientnet_lite0 (default, offline), inceptionv1, timm:NAME, torchvision:NAME")
    p.add_argument("--weights", help="local weights file (for offline use)")
    p.add_argument("--no-pretrained", action="store_true", help="random weights (offline shape tests)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: cuda if available)")


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (a bad value fails before any work or output)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def load_model_from_args(args: argparse.Namespace):
    import torch

    from ..models import load_model

    kwargs = {}
    if args.weights:
        kwargs["weights"] = args.weights
    if args.no_pretrained:
        kwargs["pretrained"] = False
    model = load_model(args.model, **kwargs)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device)


if __name__ == "__main__":
    sys.exit(main())
