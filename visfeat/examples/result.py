"""The result of dataset examples: per unit, the top images and patches, heatmaps, a uniform sample of values,
and optionally each image's predicted class; saved as ``examples.safetensors`` + ``examples.json``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data import Source
from ..errors import UnitError, VisfeatError
from ..images import atomic_write
from .geometry import patch_box
from .topk import FIELDS, GROUP_FIELDS, TopK

FILES = ("examples.safetensors", "examples.json")

#: Optional tensors saved next to the TopK fields: each image's top-1 class and its softmax probability.
PREDICTION_FIELDS = ("pred_class", "pred_prob")


@dataclass
class Examples:
    """The result: per-unit top-k state and sample, what produced it, the sources of the images it points to,
    and (optionally) each image's predicted class ``pred_class [N]`` (-1: not read) and its ``pred_prob [N]``."""

    topk: TopK
    meta: dict
    sources: dict[int, Source] = field(default_factory=dict)
    pred_class: torch.Tensor | None = None
    pred_prob: torch.Tensor | None = None

    @property
    def k(self) -> int:
        return self.topk.k

    @property
    def units(self) -> int:
        return self.topk.units

    def grid(self) -> tuple[int, int] | None:
        g = self.meta.get("grid")
        return tuple(g) if g else None

    def patch_box(self, pos: int) -> tuple[int, int, int, int]:
        """``(top, left, height, width)`` in image pixels of the patch around position ``pos``."""
        m = self.meta
        return patch_box(pos, m["image_size"], m["patch_size"], self.grid(), m.get("grid_offset", 0))

    def top_patches(self, unit: int) -> list[dict]:
        """The unit's patches, best first: image id, value, position, box in the image."""
        t = self.topk
        out = []
        for j in range(self.k):
            i = int(t.patch_id[unit, j])
            if i < 0:
                break
            pos = int(t.patch_pos[unit, j])
            out.append({"id": i, "value": float(t.patch_value[unit, j]), "pos": pos, "box": self.patch_box(pos)})
        return out

    def top_images(self, unit: int) -> list[dict]:
        """The unit's images, best first: image id and mean activation."""
        t = self.topk
        return [
            {"id": int(t.img_id[unit, j]), "value": float(t.img_value[unit, j])}
            for j in range(self.k)
            if int(t.img_id[unit, j]) >= 0
        ]

    def heatmap(self, unit: int, j: int, kind: str = "patch") -> torch.Tensor:
        """Activation map ``[H, W]`` (or ``[P]`` without a grid) of the unit's j-th example."""
        heat = getattr(self.topk, f"{kind}_heat")[unit, j].float()
        grid = self.grid()
        if grid is None:
            return heat
        off = self.meta.get("grid_offset", 0)
        return heat[off:].view(*grid)

    def _unit(self, unit: int) -> int:
        if not 0 <= unit < self.units:
            raise UnitError(f"unit {unit} is out of range: there are {self.units} units (0..{self.units - 1})")
        return unit

    def _sample(self, unit: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids ``[n]`` and the unit's values ``[n]`` on the sampled images (empty slots dropped)."""
        t = self.topk
        have = t.sample_id >= 0
        if not bool(have.any()):
            raise VisfeatError(
                "these dataset examples hold no image sample (sample_size=0, or no image read); "
                "rerun with sample_size > 0 in another cache folder"
            )
        return t.sample_id[have], t.sample_value[self._unit(unit), have].float()

    def sample(self, unit: int) -> list[dict]:
        """The unit's value on each image of the uniform sample, highest first: ``[{"id", "value"}]``."""
        ids, values = self._sample(unit)
        order = values.argsort(descending=True, stable=True).tolist()
        return [{"id": int(ids[j]), "value": float(values[j])} for j in order]

    def histogram(self, unit: int, bins: int = 32) -> tuple[list[int], list[float]]:
        """``(counts, edges)`` of the unit's per-image value (mean over positions) over the uniform sample.

        The sample is ``meta["sample_size"]`` images drawn uniformly from the dataset, so the counts sum
        to the sample size, not to the dataset size. The range is extended to the unit's top value so
        that the top examples can be marked on it.
        """
        if bins < 1:
            raise VisfeatError(f"bins must be at least 1, got {bins}")
        _, values = self._sample(unit)
        lo = float(values.min())
        hi = max(float(values.max()), float(self.topk.img_value[unit, 0]))
        if hi <= lo:  # a constant unit: one unit-wide range around its value
            lo, hi = lo - 0.5, lo + 0.5
        counts, edges = torch.histogram(values, bins=bins, range=(lo, hi))
        return [int(c) for c in counts.tolist()], edges.tolist()

    def quantile_images(
        self, unit: int, quantiles: tuple[float, ...] = (0.9, 0.75, 0.5, 0.25), distinct: bool | None = None
    ) -> list[dict]:
        """For each quantile, the sample image at that quantile of the unit's values (nearest rank):
        ``[{"id", "value", "quantile"}]``, to show what typical and weak activations look like.

        With ``distinct`` (default: the setting the examples were collected with) each pick comes from
        another source photo: an image whose source an earlier quantile took is passed over for the
        nearest rank with an unused source (with too few sources in the sample, the nearest rank not yet picked).
        """
        ids, values = self._sample(unit)
        bad = [q for q in quantiles if not 0 <= q <= 1]
        if bad:
            raise VisfeatError(f"quantiles must lie in [0, 1], got {bad}")
        order = values.argsort(stable=True)
        n = len(order)
        ranks = [int(q * (n - 1) + 0.5) for q in quantiles]
        if self.meta.get("distinct", False) if distinct is None else distinct:
            ranks = self._distinct_ranks(ranks, [self._source_name(int(ids[j])) for j in order.tolist()])
        picks = [int(order[r]) for r in ranks]
        return [
            {"id": int(ids[j]), "value": float(values[j]), "quantile": float(q)}
            for j, q in zip(picks, quantiles, strict=True)
        ]

    def _source_name(self, image_id: int) -> str:
        """The source photo (or file) of an image; the id itself when its source was not recorded."""
        src = self.sources.get(image_id)
        return src.name if src is not None else f"#{image_id}"

    @staticmethod
    def _distinct_ranks(ranks: list[int], names: list[str]) -> list[int]:
        """Move each rank (in turn) to the nearest one whose source no earlier pick used (the lower on a tie),
        then hand the picks back in the quantiles' order, so higher quantiles still get higher values."""
        used: set[str] = set()
        out = []
        for r in ranks:
            near = sorted(range(len(names)), key=lambda j: (abs(j - r), j))
            free = [j for j in near if j not in out] or [r]
            pick = next((j for j in free if names[j] not in used), free[0])
            used.add(names[pick])
            out.append(pick)
        by_rank = sorted(range(len(ranks)), key=lambda i: (ranks[i], i))
        final = [0] * len(ranks)
        for i, r in zip(by_rank, sorted(out), strict=True):
            final[i] = r
        return final

    def prediction(self, image_id: int) -> tuple[int, float]:
        """The model's top-1 class index for image ``image_id`` and its softmax probability."""
        if self.pred_class is None or self.pred_prob is None:
            raise VisfeatError(
                "these dataset examples hold no predictions; rerun with predictions=True in another cache folder "
                "(they are recorded by default only for models with class labels)"
            )
        if not 0 <= image_id < len(self.pred_class) or int(self.pred_class[image_id]) < 0:
            raise VisfeatError(
                f"no prediction for image {image_id}: it is outside the dataset, unreadable, or not reached yet "
                "(pass an id from top_images, top_patches, sample or quantile_images)"
            )
        return int(self.pred_class[image_id]), float(self.pred_prob[image_id])

    def save(self, folder: str | Path) -> None:
        """Write ``examples.safetensors`` + ``examples.json`` atomically."""
        from safetensors.torch import save

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            **self.meta,
            "images_seen": self.topk.images_seen,
            "positions_seen": self.topk.positions_seen,
            "sources": {str(i): s.to_dict() for i, s in self.sources.items()},
        }
        tensors = {k: self.topk.tensors[k].contiguous() for k in FIELDS + GROUP_FIELDS if k in self.topk.tensors}
        if self.pred_class is not None and self.pred_prob is not None:
            tensors |= {"pred_class": self.pred_class.contiguous(), "pred_prob": self.pred_prob.contiguous()}
        atomic_write(folder / FILES[0], save(tensors))
        atomic_write(folder / FILES[1], json.dumps(meta, indent=1).encode())

    @classmethod
    def load(cls, folder: str | Path) -> Examples:
        """Read a saved result (or an interrupted run's state); errors say which file is bad."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        try:
            meta = json.loads((folder / FILES[1]).read_text())
            tensors = load_file(str(folder / FILES[0]))
        except FileNotFoundError as e:
            raise VisfeatError(f"{folder} holds no dataset examples ({e.filename} missing)") from e
        except (OSError, json.JSONDecodeError, SafetensorError, UnicodeDecodeError) as e:
            raise VisfeatError(f"dataset examples in {folder} are corrupt ({e}); delete the folder and rerun") from e
        missing = [k for k in FIELDS if k not in tensors]
        if missing:
            raise VisfeatError(
                f"dataset examples in {folder} lack {missing} (an older format); delete the folder and rerun"
            )
        u, k = tensors["img_value"].shape
        pred = [tensors.pop(f, None) for f in PREDICTION_FIELDS]
        p, r = tensors["img_heat"].shape[2], tensors["sample_id"].shape[0]
        topk = TopK(u, k, p, tensors, meta.pop("images_seen"), meta.pop("positions_seen"), r)
        sources = {
            int(i): Source(s["name"], tuple(s["box"]), tuple(s["size"])) for i, s in meta.pop("sources", {}).items()
        }
        return cls(topk, meta, sources, *pred)
