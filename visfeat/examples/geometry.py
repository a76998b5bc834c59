"""Where a unit looks in an image: the receptive field of a layer's position, and the patch box of a position.

Dataset examples show, per unit, the patch of each top image around its best position: its side is the
measured receptive field of conv layers (three patches for token layers, the whole image for vectors).
"""

from __future__ import annotations

import torch

from ..sae.vectors import to_vectors


def patch_box(
    pos: int, image_size: int, side: int, grid: tuple[int, int] | None, offset: int = 0
) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` in pixels of the ``side``-px patch around position ``pos`` of a ``grid`` laid
    over a square image (``offset``: non-grid positions first, e.g. class tokens); the whole image without a grid."""
    if grid is None or pos < 0:
        return 0, 0, image_size, image_size
    h, w = grid
    y, x = divmod(pos - offset, w)
    cy, cx = (y + 0.5) * image_size / h, (x + 0.5) * image_size / w
    top = int(min(max(0, round(cy - side / 2)), image_size - side))
    left = int(min(max(0, round(cx - side / 2)), image_size - side))
    return top, left, side, side


def receptive_field(model, layer: str, size: int, mass: float = 0.9, seed: int = 0) -> int:
    """Side in pixels of the centred square holding ``mass`` of the centre position's input gradient."""
    g = torch.Generator().manual_seed(seed)
    x = (0.5 + 0.1 * torch.randn(2, 3, size, size, generator=g)).clamp(0, 1).to(model.device).requires_grad_(True)
    act = model.activations(x, [layer])[layer]
    v = to_vectors(act)  # [B, P, D]
    if act.dim() == 4:
        h, w = act.shape[-2:]
        centre = (h // 2) * w + w // 2
    else:
        centre = v.shape[1] // 2
    v[:, centre].abs().sum().backward()
    grad = x.grad.abs().sum((0, 1))  # [S, S]
    total = float(grad.sum())
    if total == 0:
        return size
    cy, cx = size // 2, size // 2
    for half in range(1, size // 2 + 1):
        win = grad[max(0, cy - half) : cy + half, max(0, cx - half) : cx + half]
        if float(win.sum()) >= mass * total:
            return min(size, 2 * half)
    return size


def patch_side(model, layer: str, size: int, probe: torch.Tensor, grid) -> int:
    """Side in pixels of a unit's patch. Conv layers: the measured receptive field; token layers (global
    attention): three patches; vectors: the whole image."""
    if probe.dim() == 4:
        return receptive_field(model, layer, size)
    return min(size, 3 * size // grid[1]) if grid else size
