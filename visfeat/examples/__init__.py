"""Dataset examples: for every unit of a layer (or every SAE latent), the images and patches that excite it most.

``dataset_examples(model, layer, images)`` streams a dataset (a folder, or the embedded image set)
through the model once and keeps, per unit, the top-k images (mean activation over positions) and
the top-k patches (best single position, one per image), each with its heatmap. Memory is bounded
by ``units x k``; with ``cache=`` the state is saved every few batches and a rerun resumes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data import Source, iter_batches
from ..errors import VisfeatError
from ..images import atomic_write
from .topk import FIELDS, TopK

FILES = ("examples.safetensors", "examples.json")


@dataclass
class Examples:
    """The result: per-unit top-k state, what produced it, and the sources of the images it points to."""

    topk: TopK
    meta: dict
    sources: dict[int, Source] = field(default_factory=dict)

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
        size, side = self.meta["image_size"], self.meta["patch_size"]
        grid = self.grid()
        if grid is None or pos < 0:
            return 0, 0, size, size
        h, w = grid
        offset = self.meta.get("grid_offset", 0)
        y, x = divmod(pos - offset, w)
        cy, cx = (y + 0.5) * size / h, (x + 0.5) * size / w
        top = int(min(max(0, round(cy - side / 2)), size - side))
        left = int(min(max(0, round(cx - side / 2)), size - side))
        return top, left, side, side

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
        atomic_write(folder / FILES[0], save({k: self.topk.tensors[k].contiguous() for k in FIELDS}))
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
            raise VisfeatError(f"dataset examples in {folder} lack {missing}; delete the folder and rerun")
        u, k = tensors["img_value"].shape
        topk = TopK(u, k, tensors["img_heat"].shape[2], tensors, meta.pop("images_seen"), meta.pop("positions_seen"))
        sources = {
            int(i): Source(s["name"], tuple(s["box"]), tuple(s["size"])) for i, s in meta.pop("sources", {}).items()
        }
        return cls(topk, meta, sources)


def unit_maps(act: torch.Tensor, sae=None, tokens: str = "all") -> torch.Tensor:
    """Activation per unit and position ``[B, U, P]``: the layer's channels, or an SAE's latents."""
    from ..sae.vectors import to_vectors

    v = to_vectors(act, tokens).float()  # [B, P, D]
    if sae is not None:
        if sae.W_enc.device != v.device:
            sae.to(v.device)
        v = sae.encode(v)
    return v.transpose(1, 2)


def feature_id(sae=None) -> str:
    """Names what the units are, for cache checks: ``channels`` or the SAE's variant, size and weights hash."""
    if sae is None:
        return "channels"
    digest = hashlib.sha256(sae.W_enc.detach().cpu().numpy().tobytes()).hexdigest()[:12]
    return f"sae:{sae.config.variant}:{sae.config.d_sae}:{digest}"


def receptive_field(model, layer: str, size: int, mass: float = 0.9, seed: int = 0) -> int:
    """Side in pixels of the centred square holding ``mass`` of the centre position's input gradient."""
    from ..sae.vectors import to_vectors

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


def _patch_size(model, layer: str, size: int, probe: torch.Tensor, grid) -> int:
    """Conv layers: the measured receptive field; token layers (global attention): three patches."""
    if probe.dim() == 4:
        return receptive_field(model, layer, size)
    return min(size, 3 * size // grid[1]) if grid else size


def dataset_examples(
    model,
    layer: str,
    dataset=None,
    *,
    k: int = 16,
    sae=None,
    tokens: str | None = None,
    cache: str | Path | None = None,
    batch_size: int = 32,
    checkpoint_every: int = 20,
    n: int = 1024,
    progress: bool = True,
) -> Examples:
    """Top-k images and patches per unit of ``layer`` (or per latent of ``sae``) over ``dataset``.

    ``dataset``: a folder path, a dataset from :mod:`visfeat.data`, or None for the embedded set of
    ``n`` crops. ``tokens`` (token layers: all, cls, patch) defaults to the SAE's. With ``cache`` (a
    folder) the state is saved every ``checkpoint_every`` batches and at the end; a rerun with the
    same settings resumes (or returns the finished result at once).
    """
    from ..data import image_dataset
    from ..models import load_model
    from ..sae.vectors import grid_shape

    model = load_model(model)
    model.layer(layer)  # unknown layer: error with close names before any work
    if k < 1:
        raise VisfeatError(f"k must be at least 1, got {k}")
    if sae is not None and sae.config.layer and sae.config.layer != layer:
        raise VisfeatError(f"the SAE was trained on layer {sae.config.layer!r}, not {layer!r}")
    tokens = tokens or (sae.config.tokens if sae is not None else "all")
    size = model.spec.size[0] if model.spec.size else 224
    if dataset is None or isinstance(dataset, (str, Path)):
        dataset = image_dataset(dataset, size=size, n=n)
    first = next(iter_batches(dataset, 1))[1]  # the first readable image (errors if none is)
    size = int(first.shape[-1])
    key = {
        "model": model.name,
        "layer": layer,
        "feature": feature_id(sae),
        "tokens": tokens,
        "k": k,
        "dataset": getattr(dataset, "label", "dataset"),
        "fingerprint": dataset.fingerprint(),
        "images": len(dataset),
    }
    result = None
    if cache is not None and (Path(cache) / FILES[1]).exists():
        result = Examples.load(cache)
        old = {kk: result.meta.get(kk) for kk in key}
        if old != key:
            raise VisfeatError(
                f"{cache} holds dataset examples of other settings ({old}); expected {key}. "
                "Pass another cache folder or delete this one"
            )
        if result.meta.get("complete"):
            return result
    if result is None:
        with torch.no_grad():
            probe = model.activations(first.to(model.device), [layer])[layer]
            maps = unit_maps(probe, sae, tokens)
        grid = grid_shape(probe, tokens)
        offset = maps.shape[2] - grid[0] * grid[1] if grid else 0
        meta = {
            **key,
            "grid": list(grid) if grid else None,
            "grid_offset": offset,
            "image_size": size,
            "patch_size": _patch_size(model, layer, size, probe, grid),
            "complete": False,
            "next": 0,
            "skipped": [],
        }
        result = Examples(TopK(maps.shape[1], k, maps.shape[2]), meta)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(dataset), initial=result.meta["next"], desc=f"examples {layer}", unit="img")
    try:
        for nb, (idx, images) in enumerate(iter_batches(dataset, batch_size, start=result.meta["next"])):
            expected = set(range(result.meta["next"], idx[-1] + 1))
            result.meta["skipped"] += sorted(expected - set(idx))
            with torch.no_grad():
                act = model.activations(images.to(model.device), [layer])[layer]
                result.topk.update(unit_maps(act, sae, tokens), torch.tensor(idx))
            result.meta["next"] = idx[-1] + 1
            if bar is not None:
                bar.update(idx[-1] + 1 - bar.n)
            if cache is not None and (nb + 1) % checkpoint_every == 0:
                result.save(cache)
        result.meta["skipped"] += list(range(result.meta["next"], len(dataset)))
        result.meta["next"] = len(dataset)
        result.meta["complete"] = True
        ids = set(result.topk.img_id.flatten().tolist()) | set(result.topk.patch_id.flatten().tolist())
        result.sources = {i: dataset.source(i) for i in sorted(ids) if i >= 0}
        if cache is not None:
            result.save(cache)
    finally:
        if bar is not None:
            bar.close()
    return result


__all__ = ["Examples", "TopK", "dataset_examples", "receptive_field", "unit_maps"]
