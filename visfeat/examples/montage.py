"""Pictures of dataset examples: a strip per unit, top images with their heatmap, then top patches."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .result import Examples


def overlay(image: torch.Tensor, heat: torch.Tensor, vmax: float) -> torch.Tensor:
    """The image dimmed where the unit is inactive: ``[3, S, S]``."""
    s = image.shape[-1]
    h = heat.clamp(min=0) / max(vmax, 1e-8)
    h = F.interpolate(h[None, None].float(), size=(s, s), mode="bilinear", align_corners=False)[0]
    return image * (0.25 + 0.75 * h.clamp(0, 1))


def unit_strip(ex: Examples, dataset, unit: int, tile: int = 96, n: int | None = None) -> torch.Tensor:
    """Two rows of ``n`` tiles: top images (heatmap overlay) and top patches (crops). ``[3, 2*tile, n*tile]``."""
    n = n or ex.k
    rows = []
    vmax = float(ex.topk.max[unit])
    for kind in ("img", "patch"):
        tiles = []
        ids = getattr(ex.topk, f"{kind}_id")[unit]
        for j in range(n):
            i = int(ids[j]) if j < ex.k else -1
            if i < 0:
                tiles.append(torch.zeros(3, tile, tile))
                continue
            img = dataset[i]
            if kind == "img":
                t = overlay(img, ex.heatmap(unit, j, "img"), vmax) if ex.grid() else img
            else:
                top, left, h, w = ex.patch_box(int(ex.topk.patch_pos[unit, j]))
                t = img[:, top : top + h, left : left + w]
            tiles.append(F.interpolate(t[None], size=(tile, tile), mode="bilinear", antialias=True)[0])
        rows.append(torch.cat(tiles, 2))
    return torch.cat(rows, 1).clamp(0, 1)
