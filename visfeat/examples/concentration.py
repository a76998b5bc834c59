"""How concentrated a unit's top dataset examples are on one source photo, and on one region of it.

For each unit, its top-k patches are traced back to the source photo and to a cell of a ``grid x
grid`` partition of that photo. ``photo`` is the largest share of the k patches from one photo,
``region`` the largest share from one cell (1.0: all examples show the same place; 1/k at best
spread). A monosemantic unit responds to one kind of thing, which in a set of a few photos lives in
few places; a polysemantic one collects examples from everywhere.
"""

from __future__ import annotations

from collections import Counter

import torch

from .result import Examples


def patch_locations(ex: Examples, unit: int) -> list[tuple[str, float, float]]:
    """``(source name, y, x)`` of the centre of each top patch, in the source's relative coordinates [0, 1)."""
    out = []
    size = ex.meta["image_size"]
    for p in ex.top_patches(unit):
        src = ex.sources[p["id"]]
        top, left, h, w = p["box"]
        cy, cx = top + h / 2, left + w / 2
        sy, sx = src.box[0] + cy * src.box[2] / size, src.box[1] + cx * src.box[3] / size
        out.append((src.name, sy / max(1, src.size[0]), sx / max(1, src.size[1])))
    return out


def concentration(ex: Examples, grid: int = 3, alive_only: bool = True) -> dict[str, torch.Tensor]:
    """Per unit ``photo`` and ``region`` concentration in [1/k, 1], and ``alive`` (k positive examples).

    Units without k positive patches are marked not alive; their scores are NaN when ``alive_only``.
    Examples collected ``distinct`` (one crop per photo) score 1/k by construction and are refused.
    """
    if ex.meta.get("distinct", False):
        raise ValueError(
            "concentration() needs examples collected with distinct=False: distinct examples come from "
            "one photo each, so every unit would score 1/k; pass distinct=False to dataset_examples()"
        )
    units = ex.units
    photo = torch.full((units,), float("nan"))
    region = torch.full((units,), float("nan"))
    alive = ex.topk.patch_value[:, -1] > 0
    for u in range(units):
        if alive_only and not alive[u]:
            continue
        locs = patch_locations(ex, u)
        if not locs:
            continue
        n = len(locs)
        photo[u] = Counter(name for name, _, _ in locs).most_common(1)[0][1] / n
        cells = Counter((name, min(int(y * grid), grid - 1), min(int(x * grid), grid - 1)) for name, y, x in locs)
        region[u] = cells.most_common(1)[0][1] / n
    return {"photo": photo, "region": region, "alive": alive}


def summary(scores: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean photo and region concentration over the alive units, and how many there were."""
    ok = ~torch.isnan(scores["photo"])
    return {
        "photo": float(scores["photo"][ok].mean()) if ok.any() else float("nan"),
        "region": float(scores["region"][ok].mean()) if ok.any() else float("nan"),
        "units": int(ok.sum()),
    }
