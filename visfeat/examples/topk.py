"""Streaming top-k per unit: memory bounded by ``units x k``, however many images stream through."""

from __future__ import annotations

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
)


@dataclass
class TopK:
    """Top-``k`` images (by mean activation over positions) and patches (by the activation at one position).

    A patch is the best position of an image for that unit, so the ``k`` patches come from ``k``
    different images. Each example keeps its heatmap (the unit's activation at every position).
    ``max``/``sum``/``fires`` are running per-unit statistics over all positions seen.
    """

    units: int
    k: int
    positions: int
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    images_seen: int = 0
    positions_seen: int = 0

    def __post_init__(self) -> None:
        if not self.tensors:
            u, k, p = self.units, self.k, self.positions
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
            }

    def __getattr__(self, name: str) -> torch.Tensor:
        tensors = self.__dict__.get("tensors", {})
        if name in tensors:
            return tensors[name]
        raise AttributeError(name)

    def update(self, maps: torch.Tensor, ids: torch.Tensor) -> None:
        """Merge a batch: ``maps [B, U, P]`` activations per unit and position, ``ids [B]`` image indices."""
        maps = maps.detach().float().cpu()
        b = maps.shape[0]
        t = self.tensors
        heat = maps.transpose(0, 1).to(torch.float16)  # [U, B, P]
        ids_u = ids.view(1, b).expand(self.units, b)
        mean = maps.mean(2).T  # [U, B]
        best, pos = maps.max(2)  # [B, U]
        self._merge("img", mean, ids_u, heat)
        self._merge("patch", best.T, ids_u, heat, pos.T)
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

    @property
    def mean(self) -> torch.Tensor:
        """Mean activation per unit over every position seen."""
        return (self.tensors["sum"] / max(1, self.positions_seen)).float()

    @property
    def frequency(self) -> torch.Tensor:
        """Fraction of positions where each unit is positive."""
        return self.tensors["fires"].float() / max(1, self.positions_seen)
