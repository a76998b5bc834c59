"""Streaming top-k per unit, plus a uniform sample of images: memory bounded by ``units x (k + R)``.

With ``distinct`` each image has a group (the source photo it was cropped from) and the top-k tables keep
at most one image per group: the best of each group by (value, then lowest id), so the result is the same
whatever the batch size or order. The sample is a bottom-R sketch: the ``R`` images with the smallest hash
priority of their id. Merging is "concatenate, keep the R smallest", so the sample does not depend on batch
size, batch order or where a run was resumed, and needs no random-number state.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

from ..errors import VisfeatError

#: Tensor fields of :class:`TopK`, in the order they are saved.
FIELDS = (
    "img_value",
    "img_id",
    "img_heat",
    "patch_value",
    "patch_id",
    "patch_pos",
    "patch_heat",
    "max",
    "sum",
    "fires",
    "sample_id",
    "sample_value",
)

#: Extra tensor fields of a :class:`TopK` with ``distinct``: the group (source photo) of each kept example.
GROUP_FIELDS = ("img_group", "patch_group")

#: Default number of images in the uniform sample (the activation distribution of each unit).
SAMPLE_SIZE = 256

_EMPTY = torch.iinfo(torch.long).max  # priority of an empty sample slot: after every real image


def priority(ids: torch.Tensor) -> torch.Tensor:
    """Deterministic pseudo-random 63-bit priority of each image id (``-1``, an empty slot, sorts last)."""
    out = [
        int.from_bytes(hashlib.blake2b(i.to_bytes(8, "little", signed=True), digest_size=8).digest(), "little") >> 1
        if i >= 0
        else _EMPTY
        for i in ids.tolist()
    ]
    return torch.tensor(out, dtype=torch.long)


def best_per_group(values: torch.Tensor, ids: torch.Tensor, groups: torch.Tensor, k: int):
    """Per row, the ``k`` best candidates with at most one per group: ``(index [U, k], valid [U, k])``.

    ``values``/``ids``/``groups`` are ``[U, N]`` (``N >= k``; id ``-1`` is an empty slot). Candidates are
    ranked by value, then lowest id (a total order, so the choice does not depend on how the candidates
    were batched); each group keeps its first in that order; the kept are returned best first, padded
    with ``valid=False`` where fewer than ``k`` groups have one.
    """
    n = values.shape[1]
    by_id = ids.argsort(dim=1, stable=True)
    by_value = by_id.gather(1, values.gather(1, by_id).argsort(dim=1, descending=True, stable=True))
    rank = torch.empty_like(by_value).scatter_(1, by_value, torch.arange(n).expand_as(by_value).contiguous())
    by_group = by_value.gather(1, groups.gather(1, by_value).argsort(dim=1, stable=True))
    g = groups.gather(1, by_group)
    first = torch.ones_like(g, dtype=torch.bool)
    first[:, 1:] = g[:, 1:] != g[:, :-1]
    keep = torch.zeros_like(first).scatter_(1, by_group, first) & (ids >= 0)
    top = rank.masked_fill(~keep, n).topk(k, dim=1, largest=False).indices
    return top, keep.gather(1, top)


@dataclass
class TopK:
    """Top-``k`` images (by mean activation over positions) and patches (by the activation at one position).

    A patch is the best position of an image for that unit, so the ``k`` patches come from ``k``
    different images. Each example keeps its heatmap (the unit's activation at every position).
    ``max``/``sum``/``fires`` are running per-unit statistics over all positions seen.
    ``sample_id [R]`` / ``sample_value [U, R]``: a uniform sample of ``sample_size`` images (smallest
    :func:`priority` first, ``-1`` = empty slot) and each unit's mean activation on them. With ``distinct``
    every :meth:`update` gives each image's group and the images and patches of a unit come from
    distinct groups (``img_group``/``patch_group [U, k]`` hold them; unfilled slots have id ``-1``).
    """

    units: int
    k: int
    positions: int
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    images_seen: int = 0
    positions_seen: int = 0
    sample_size: int = SAMPLE_SIZE
    distinct: bool = False

    def __post_init__(self) -> None:
        if self.tensors:  # a saved state: distinct when it holds the groups
            self.distinct = all(f in self.tensors for f in GROUP_FIELDS)
            return
        u, k, p, r = self.units, self.k, self.positions, self.sample_size
        self.tensors = {
            "img_value": torch.full((u, k), float("-inf")),
            "img_id": torch.full((u, k), -1, dtype=torch.long),
            "img_heat": torch.zeros(u, k, p, dtype=torch.float16),
            "patch_value": torch.full((u, k), float("-inf")),
            "patch_id": torch.full((u, k), -1, dtype=torch.long),
            "patch_pos": torch.full((u, k), -1, dtype=torch.long),
            "patch_heat": torch.zeros(u, k, p, dtype=torch.float16),
            "max": torch.full((u,), float("-inf")),
            "sum": torch.zeros(u, dtype=torch.float64),
            "fires": torch.zeros(u, dtype=torch.long),
            "sample_id": torch.full((r,), -1, dtype=torch.long),
            "sample_value": torch.zeros(u, r),
        }
        if self.distinct:
            self.tensors |= {f: torch.full((u, k), -1, dtype=torch.long) for f in GROUP_FIELDS}

    def __getattr__(self, name: str) -> torch.Tensor:
        tensors = self.__dict__.get("tensors", {})
        if name in tensors:
            return tensors[name]
        raise AttributeError(name)

    def update(self, maps: torch.Tensor, ids: torch.Tensor, groups: torch.Tensor | None = None) -> None:
        """Merge a batch: ``maps [B, U, P]`` activations per unit and position, ``ids [B]`` image indices,
        and (required with ``distinct``, refused without) ``groups [B]``, each image's group (source photo)."""
        if (groups is None) == self.distinct:
            raise VisfeatError(
                "this top-k state keeps one example per group: pass groups (one per image)"
                if self.distinct
                else "this top-k state was made without distinct=True: pass no groups"
            )
        maps = maps.detach().float().cpu()
        ids = ids.cpu()
        b = maps.shape[0]
        t = self.tensors
        heat = maps.transpose(0, 1).to(torch.float16)  # [U, B, P]
        ids_u = ids.view(1, b).expand(self.units, b)
        groups_u = None if groups is None else groups.cpu().view(1, b).expand(self.units, b)
        mean = maps.mean(2).T  # [U, B]
        best, pos = maps.max(2)  # [B, U]
        self._merge("img", mean, ids_u, heat, groups=groups_u)
        self._merge("patch", best.T, ids_u, heat, pos.T, groups_u)
        self._merge_sample(mean, ids)
        t["max"] = torch.maximum(t["max"], best.max(0).values)
        t["sum"] += maps.sum((0, 2)).double()
        t["fires"] += (maps > 0).sum((0, 2))
        self.images_seen += b
        self.positions_seen += b * maps.shape[2]

    def _merge(self, kind: str, values, ids, heat, pos=None, groups=None) -> None:
        """Keep the top k of the kept and the new candidates (with groups: the best of each group only)."""
        t = self.tensors
        allv = torch.cat([t[f"{kind}_value"], values], 1)
        allid = torch.cat([t[f"{kind}_id"], ids], 1)
        if groups is None:
            top, valid = allv.topk(self.k, dim=1).indices, None  # [U, k]
        else:
            allg = torch.cat([t[f"{kind}_group"], groups], 1)
            top, valid = best_per_group(allv, allid, allg, self.k)
            t[f"{kind}_group"] = allg.gather(1, top).masked_fill(~valid, -1)
        t[f"{kind}_value"] = allv.gather(1, top)
        t[f"{kind}_id"] = allid.gather(1, top)
        allh = torch.cat([t[f"{kind}_heat"], heat], 1)
        t[f"{kind}_heat"] = allh.gather(1, top[..., None].expand(-1, -1, self.positions))
        if pos is not None:
            t["patch_pos"] = torch.cat([t["patch_pos"], pos], 1).gather(1, top)
        if valid is not None:  # fewer groups than k: the rest are empty slots
            t[f"{kind}_value"] = t[f"{kind}_value"].masked_fill(~valid, float("-inf"))
            t[f"{kind}_id"] = t[f"{kind}_id"].masked_fill(~valid, -1)
            t[f"{kind}_heat"] = t[f"{kind}_heat"].masked_fill(~valid[..., None], 0)
            if pos is not None:
                t["patch_pos"] = t["patch_pos"].masked_fill(~valid, -1)

    def _merge_sample(self, mean: torch.Tensor, ids: torch.Tensor) -> None:
        """Bottom-R sketch merge: concatenate kept and new images, keep the R smallest priorities."""
        t = self.tensors
        allid = torch.cat([t["sample_id"], ids])
        keep = priority(allid).sort(stable=True).indices[: self.sample_size]
        t["sample_id"] = allid[keep]
        t["sample_value"] = torch.cat([t["sample_value"], mean], 1)[:, keep]

    @property
    def mean(self) -> torch.Tensor:
        """Mean activation per unit over every position seen."""
        return (self.tensors["sum"] / max(1, self.positions_seen)).float()

    @property
    def frequency(self) -> torch.Tensor:
        """Fraction of positions where each unit is positive."""
        return self.tensors["fires"].float() / max(1, self.positions_seen)
