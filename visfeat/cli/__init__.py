"""The ``visfeat`` command. Each sub-command lives in its own module with ``add_parser`` and ``run``; ``main``
(the entry point) and the shared ``options`` have their own modules."""

from __future__ import annotations

from .main import COMMANDS, build_parser, main
from .options import add_model_args, add_render_options, load_model_from_args, positive_int

__all__ = [
    "COMMANDS",
    "add_model_args",
    "add_render_options",
    "build_parser",
    "load_model_from_args",
    "main",
    "positive_int",
]
