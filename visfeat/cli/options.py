"""Options that several sub-commands share: the model and how to load it, render budgets, integer checks."""

from __future__ import annotations

import argparse

from ..errors import VisfeatError
from ..models import AUTO, Model, load_model
from ..presets import PRESETS, get_preset


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The MODEL argument and its options, shared by every sub-command that loads a model."""
    p.add_argument("model", help="efficientnet_lite0 (default, offline), inceptionv1, timm:NAME, torchvision:NAME")
    p.add_argument("--weights", help="local weights file (for offline use)")
    p.add_argument("--no-pretrained", action="store_true", help="random weights (offline shape tests)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: cuda if available)")


def load_model_from_args(args: argparse.Namespace) -> Model:
    """The model that :func:`add_model_args`' options name, on ``--device`` (default: CUDA when available)."""
    return load_model(args.model, weights=args.weights, pretrained=not args.no_pretrained, device=args.device or AUTO)


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (a bad value fails before any work or output)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def preset_name(text: str) -> str:
    """argparse type: a render preset name; an unknown one names the closest."""
    try:
        return get_preset(text).name
    except VisfeatError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_render_options(p: argparse.ArgumentParser) -> None:
    """The render budget (``--preset``, overridden by ``--steps``, ``--lr``, ``--lr-schedule``, ``--views``,
    ``--settle``) and ``--seed``: what ``visfeat render`` and ``visfeat sae inspect --render`` pass to
    :func:`visfeat.render`."""
    presets = "; ".join(f"{p.name}: {p.about}" for p in PRESETS.values())
    p.add_argument("--preset", type=preset_name, default="default", help=f"render budget ({presets})")
    p.add_argument("--steps", type=positive_int, default=None, help="optimization steps (default: the preset's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the preset's)")
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default=None, help="default: the preset's")
    p.add_argument(
        "--views",
        type=positive_int,
        default=None,
        help="random transforms per image and step, averaged (default: the preset's)",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=None,
        help="share of the steps, at the end, without random transforms (default: the preset's)",
    )
    p.add_argument("--seed", type=int, default=0)


def render_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`visfeat.render` that :func:`add_render_options` set (not the seed)."""
    return {
        "preset": args.preset,
        "steps": args.steps,
        "lr": args.lr,
        "lr_schedule": args.lr_schedule,
        "views": args.views,
        "settle": args.settle,
    }
