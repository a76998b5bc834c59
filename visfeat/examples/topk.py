"""Streaming top-k per unit, plus a uniform sample of images: memory bounded by ``units x (k + R)``.

The sample is a bottom-R sketch: the ``R`` images with the smallest hash priority of their id. Merging
is "concatenate, keep the R smallest", so the sample does not depend on batch size, batch order or
where a run was resumed, and needs no random-number state.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch

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


@dataclass
class TopK:
    """Top-``k`` images (by mean activation over positions) and patches (by the activation at one position).

    A patch is the best position of an image for that unit, so the ``k`` patches come from ``k``
    different images. Each example keeps its heatmap (the unit's activation at every position).
    ``max``/``sum``/``fires`` are running per-unit statistics over all positions seen.
    ``sample_id [R]`` / ``sample_value [U, R]``: a uniform sample of ``sample_size`` images (smallest
    :func:`priority` first, ``-1`` = empty slot) and each unit's mean activation on them.
    """

    units: int
    k: int
    positions: int
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    images_seen: int = 0
    positions_seen: int = 0
    sample_size: int = SAMPLE_SIZE

    def __post_init__(self) -> None:
        if not self.tensors:
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

    def __getattr__(self, name: str) -> torch.Tensor:
        tensors = self.__dict__.get("tensors", {})
        if name in tensors:
            return tensors[name]
        raise AttributeError(name)

    def update(self, maps: torch.Tensor, ids: torch.Tensor) -> None:
        """Merge a batch: ``maps [B, U, P]`` activations per unit and position, ``ids [B]`` image indices."""
        maps = maps.detach().float().cpu()
        ids = ids.cpu()
        b = maps.shape[0]
        t = self.tensors
        heat = maps.transpose(0, 1).to(torch.float16)  # [U, B, P]
        ids_u = ids.view(1, b).expand(self.units, b)
        mean = maps.mean(2).T  # [U, B]
        best, pos = maps.max(2)  # [B, U]
        self._merge("img", mean, ids_u, heat)
        self._merge("patch", best.T, ids_u, heat, pos.T)
        self._merge_sample(mean, ids)
        t["max"] = torch.maximum(t["max"], best.max(0).values)
        t["sum"] += maps.sum((0, 2)).double()
        t["fires"] += (maps > 0).sum((0, 2))
        self.images_seen += b
        self.positions_seen += b * maps.shape[2]

    def _merge(self, kind: str, values, ids, heat, pos=None) -> None:
        t = self.tensors
        allv = torch.cat([t[f"{kind}_value"], values], 1)
        top = allv.topk(self.k, dim=1).indices  # [U, k]
        t[f"{kind}_value"] = allv.gather(1, top)
        t[f"{kind}_id"] = torch.cat([t[f"{kind}_id"], ids], 1).gather(1, top)
        allh = torch.cat([t[f"{kind}_heat"], heat], 1)
        t[f"{kind}_heat"] = allh.gather(1, top[..., None].expand(-1, -1, self.positions))
        if pos is not None:
            t["patch_pos"] = torch.cat([t["patch_pos"], pos], 1).gather(1, top)

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
