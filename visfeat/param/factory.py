"""The parameterizations by name: the :class:`Param` protocol and a constructor for each kind."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn

from ..errors import VisfeatError, unknown
from .maco import Maco
from .seeded import Seeded
from .spatial import Fourier, Pixel
from .trigger import Trigger


class Param(Protocol):
    """An image parameterization: settings whose ``build`` returns a module giving the image batch in [0, 1]."""

    size: int | tuple[int, int]

    def build(self, batch: int, generator: torch.Generator, device: torch.device | str = "cpu") -> nn.Module: ...


def pixel(size: int | tuple[int, int] = 128, sd: float = 0.01, decorrelate: bool = True) -> Pixel:
    """Plain pixels (noisy results; a baseline)."""
    return Pixel(size, sd, decorrelate)


def fourier(
    size: int | tuple[int, int] = 128,
    sd: float = 0.01,
    decay: float = 1.0,
    decorrelate: bool = True,
    cutoff: float | None = None,
    grow: int = 0,
    headroom: float = 0.0,
) -> Fourier:
    """1/f-scaled Fourier spectrum with colour decorrelation (Lucid's default); ``cutoff``: a low-pass that falls
    smoothly to 0 at this share of Nyquist (0.5: none of the finest half of the scales); ``grow``: coarse to fine,
    the pass band opens from 0.15 x Nyquist to ``cutoff`` over this many first steps of a render, at most half;
    ``headroom``: the weight of a penalty on colour logits beyond +-4 (sigmoid 0.018 / 0.982), which keeps pixels
    off pure black and white (1000 in ``render``'s default for coarse units: clipped 0.07% -> 0 at 256 steps)."""
    return Fourier(size, sd, decay, decorrelate, cutoff, grow, headroom)


def maco(size: int | tuple[int, int] = 224, spectrum=None, contrast: float = 1.0) -> Maco:
    """Phase-only optimization with a fixed natural magnitude spectrum (MACO)."""
    return Maco(size, spectrum, contrast)


def seeded(
    images: torch.Tensor | None = None, decay: float = 1.0, decorrelate: bool = True, eps: float = 1e-3
) -> Seeded:
    """A Fourier image that starts at ``images`` [B, 3, H, W] in [0, 1] (feature accentuation), not at noise."""
    if images is None:
        raise VisfeatError("the seeded parameterization starts at photos: pass images=[B, 3, H, W] in [0, 1]")
    return Seeded(images, decay, decorrelate, eps)


def trigger(
    images: torch.Tensor | None = None,
    classes: int = 1,
    lam: tuple[float, ...] | float = 0.0,
    cells: int | None = None,
    per_step: int | None = None,
) -> Trigger:
    """Per class a mask and a pattern pasted on clean ``images`` [N, 3, H, W] (trigger search, Neural Cleanse);
    ``per_step``: photos pasted per step, cycling through all of them."""
    if images is None:
        raise VisfeatError("the trigger parameterization pastes onto photos: pass images=[N, 3, H, W] in [0, 1]")
    return Trigger(images, classes, lam, cells, per_step=per_step)


_PARAMS: dict[str, Callable[..., Param]] = {
    "pixel": pixel,
    "fourier": fourier,
    "maco": maco,
    "seeded": seeded,
    "trigger": trigger,
}


def list_params() -> list[str]:
    """The parameterization names :func:`create` takes."""
    return sorted(_PARAMS)


def create(name: str, **kwargs) -> Param:
    """A parameterization by name (``"pixel"``, ``"fourier"``, ``"maco"``; ``"seeded"`` and ``"trigger"`` need
    ``images=``)."""
    if name not in _PARAMS:
        raise VisfeatError(unknown("parameterization", name, _PARAMS))
    return _PARAMS[name](**kwargs)
