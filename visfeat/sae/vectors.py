"""Layer outputs <-> activation vectors: every spatial position of a conv map, or tokens of a ViT layer."""

from __future__ import annotations

import math

import torch

from .base import SAEError


def to_vectors(act: torch.Tensor, tokens: str = "all") -> torch.Tensor:
    """``[B, C, H, W]`` -> ``[B, H*W, C]``; ``[B, T, D]`` -> ``[B, T', D]`` (all, CLS = token 0, or patches)."""
    if isinstance(act, (tuple, list)):
        act = act[0]
    if act.dim() == 4:
        return act.flatten(2).transpose(1, 2)
    if act.dim() == 3:
        if tokens == "cls":
            return act[:, :1]
        if tokens == "patch":
            return act[:, 1:]
        return act
    if act.dim() == 2:
        return act[:, None]
    raise SAEError(f"cannot make activation vectors from a layer output of shape {tuple(act.shape)}")


def from_vectors(vectors: torch.Tensor, like: torch.Tensor, tokens: str = "all") -> torch.Tensor:
    """Inverse of :func:`to_vectors`: put ``[B, P, D]`` vectors back into a tensor shaped like ``like``."""
    if like.dim() == 4:
        b, c, h, w = like.shape
        return vectors.transpose(1, 2).reshape(b, c, h, w)
    if like.dim() == 3:
        if tokens == "cls":
            return torch.cat([vectors, like[:, 1:]], 1)
        if tokens == "patch":
            return torch.cat([like[:, :1], vectors], 1)
        return vectors
    return vectors[:, 0]


def grid_shape(act: torch.Tensor, tokens: str = "all") -> tuple[int, int] | None:
    """(H, W) of the positions when they form a grid (conv maps; square patch-token layouts)."""
    if act.dim() == 4:
        return tuple(act.shape[-2:])
    if act.dim() == 3 and tokens != "cls":
        t = act.shape[1]
        for n in (t, t - 1):  # patch tokens, with or without a leading CLS token
            side = math.isqrt(max(n, 0))
            if n > 0 and side * side == n:
                return side, side
    return None
