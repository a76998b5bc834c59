"""Colour decorrelation: optimize in a whitened colour basis, then map to RGB in [0, 1]."""

from __future__ import annotations

import torch

# Square root of ImageNet's RGB colour covariance (from its SVD), as published with Lucid.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOR = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


def decorrelate(x: torch.Tensor) -> torch.Tensor:
    """Map a [B, 3, H, W] tensor from the decorrelated basis to RGB (linear)."""
    return torch.einsum("ij,bjhw->bihw", _COLOR.to(x.device, x.dtype), x)


def to_logits(x: torch.Tensor, decorrelated: bool = True) -> torch.Tensor:
    """Unbounded parameters -> the RGB logits that :func:`to_rgb` squashes (optional decorrelation)."""
    return decorrelate(x) if decorrelated else x


def to_rgb(x: torch.Tensor, decorrelated: bool = True) -> torch.Tensor:
    """Unbounded parameters -> RGB in [0, 1] (optional decorrelation, then a sigmoid)."""
    return torch.sigmoid(to_logits(x, decorrelated))
