"""The ``visfeat`` command's entry point: the parser of every sub-command, and error reporting."""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import cpu
from ..errors import VisfeatError
from ..version import __version__

#: Sub-command modules (inside visfeat.cli), in the order ``--help`` lists them.
COMMANDS = ["gallery", "render", "accentuate", "layers", "circuit", "examples", "sae", "scan"]


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``visfeat``: each sub-command module adds its own (``add_parser``) and runs it (``run``)."""
    parser = argparse.ArgumentParser(prog="visfeat", description="Look inside vision models.")
    parser.add_argument("--version", action="version", version=f"visfeat {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        mod = importlib.import_module(f"{__package__}.{name.replace('-', '_')}")
        p = mod.add_parser(sub)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``visfeat`` with ``argv`` (default: the command line); a user error prints its message and returns 2."""
    args = build_parser().parse_args(argv)
    cpu.tune_allocator()  # this process is ours: large CPU batches stop page-faulting (see visfeat.cpu)
    try:
        return int(args._run(args) or 0)
    except VisfeatError as e:
        print(f"visfeat {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"visfeat {args.command}: interrupted; finished outputs are kept", file=sys.stderr)
        return 130
