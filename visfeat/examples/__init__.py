"""Dataset examples: for every unit of a layer (or every SAE latent), the images and patches that excite it most.

``dataset_examples_many(model, targets, images)`` streams a dataset (a folder, or the embedded image
set) through the model once, capturing every target layer in one forward per batch, and keeps per
unit of each target the top-k images (mean activation over positions), the top-k patches (best
single position, one per image) with their heatmaps, and each unit's value on a uniform sample of
``R`` images (its activation distribution). Optionally each image's predicted class is recorded in
the same pass. Memory is bounded by ``units x (k + R)``; with a cache per target the state is saved
every few batches and a rerun resumes. ``dataset_examples(model, layer, images)`` is the one-target case.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data import Source, iter_batches
from ..errors import UnitError, VisfeatError
from ..hooks import LOGITS
from ..images import atomic_write
from .topk import FIELDS, SAMPLE_SIZE, TopK

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

    def quantile_images(self, unit: int, quantiles: tuple[float, ...] = (0.9, 0.75, 0.5, 0.25)) -> list[dict]:
        """For each quantile, the sample image at that quantile of the unit's values (nearest rank):
        ``[{"id", "value", "quantile"}]``, to show what typical and weak activations look like."""
        ids, values = self._sample(unit)
        bad = [q for q in quantiles if not 0 <= q <= 1]
        if bad:
            raise VisfeatError(f"quantiles must lie in [0, 1], got {bad}")
        order = values.argsort(stable=True)
        n = len(order)
        picks = [int(order[int(q * (n - 1) + 0.5)]) for q in quantiles]
        return [
            {"id": int(ids[j]), "value": float(values[j]), "quantile": float(q)}
            for j, q in zip(picks, quantiles, strict=True)
        ]

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
        tensors = {k: self.topk.tensors[k].contiguous() for k in FIELDS}
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


def _tensor(act) -> torch.Tensor:
    """A layer output as one tensor (the first element of a tuple output)."""
    return act[0] if isinstance(act, (tuple, list)) else act


def _patch_size(model, layer: str, size: int, probe: torch.Tensor, grid) -> int:
    """Conv layers: the measured receptive field; token layers (global attention): three patches; vectors: the image."""
    if probe.dim() == 4:
        return receptive_field(model, layer, size)
    return min(size, 3 * size // grid[1]) if grid else size


@dataclass(frozen=True)
class Target:
    """One set of units for :func:`dataset_examples_many`: the channels of ``layer``, or an SAE's latents on it.

    ``layer`` may be ``"logits"`` (units = classes, one position per image). ``tokens`` (token
    layers: all, cls, patch) defaults to the SAE's, else all. ``cache``: a folder for this target's
    resumable state and result (``examples.safetensors`` + ``examples.json``), or None.
    """

    layer: str
    sae: object = None
    tokens: str | None = None
    cache: str | Path | None = None


def _check_targets(model, targets: Mapping[str, Target | str]) -> dict[str, Target]:
    """Validate every target before any work (unknown layer, SAE of another layer, shared cache folder)."""
    if not isinstance(targets, Mapping) or not targets:
        raise VisfeatError(
            f"targets must be a non-empty mapping of names to Target (or layer names), got {targets!r}; "
            "e.g. {'blocks.4': Target('blocks.4')}"
        )
    out: dict[str, Target] = {}
    for name, t in targets.items():
        t = Target(t) if isinstance(t, str) else t
        if not isinstance(t, Target):
            raise VisfeatError(f"target {name!r} must be a Target or a layer name, got {type(t).__name__}")
        model.layer(t.layer)  # unknown layer: error with close names
        sae = t.sae
        if sae is not None and sae.config.layer and sae.config.layer != t.layer:
            raise VisfeatError(f"the SAE was trained on layer {sae.config.layer!r}, not {t.layer!r} (target {name!r})")
        tokens = t.tokens or (sae.config.tokens if sae is not None else "all")
        out[name] = Target(t.layer, sae, tokens, Path(t.cache) if t.cache is not None else None)
    caches = [t.cache.resolve() for t in out.values() if t.cache is not None]
    if len(caches) != len(set(caches)):
        raise VisfeatError(f"targets share a cache folder ({sorted(map(str, caches))}); give each target its own")
    return out


def _resume(cache: Path | None, key: dict) -> Examples | None:
    """The saved state in ``cache`` if it has the same settings; None if there is none; an error otherwise."""
    if cache is None or not (cache / FILES[1]).exists():
        return None
    result = Examples.load(cache)
    old = {kk: result.meta.get(kk) for kk in key}
    if old != key:
        raise VisfeatError(
            f"{cache} holds dataset examples of other settings ({old}); expected {key}. "
            "Pass another cache folder or delete this one"
        )
    return result


def _forward(model, images: torch.Tensor, layers: list[str]) -> dict:
    """Every layer's output in one forward pass, stopping after the deepest (copies: in-place ops can't alter them)."""
    from ..hooks import activations

    x = model.preprocess(images.to(model.device))
    return activations(model.module, x, layers, True, model.logits_layer, copy=len(layers) > 1)


def _start(model, targets: dict[str, Target], first: torch.Tensor, keys: dict, k: int, r: int) -> dict[str, Examples]:
    """Empty states for targets without a saved one, from one probe forward on the first image."""
    from ..sae.vectors import grid_shape

    if not targets:
        return {}
    size = int(first.shape[-1])
    with torch.no_grad():
        acts = _forward(model, first, sorted({t.layer for t in targets.values()}))
    sides: dict[tuple, int] = {}
    out = {}
    for name, t in targets.items():
        probe = _tensor(acts[t.layer])
        with torch.no_grad():
            maps = unit_maps(probe, t.sae, t.tokens)
        grid = grid_shape(probe, t.tokens)
        if (t.layer, grid) not in sides:
            sides[t.layer, grid] = _patch_size(model, t.layer, size, probe, grid)
        meta = {
            **keys[name],
            "grid": list(grid) if grid else None,
            "grid_offset": maps.shape[2] - grid[0] * grid[1] if grid else 0,
            "image_size": size,
            "patch_size": sides[t.layer, grid],
            "complete": False,
            "next": 0,
            "skipped": [],
        }
        out[name] = Examples(TopK(maps.shape[1], k, maps.shape[2], sample_size=r), meta)
    return out


def _predictions(logits) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-1 class index ``[B]`` and its softmax probability ``[B]`` from class logits ``[B, C]``."""
    logits = _tensor(logits)
    if logits.dim() != 2:
        raise VisfeatError(
            f"predictions need class logits [batch, classes], but the model's output has shape {tuple(logits.shape)}; "
            "pass predictions=False"
        )
    prob, cls = logits.float().softmax(1).max(1)
    return cls.cpu(), prob.cpu()


def _merged_predictions(results, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One ``[N]`` class / probability table holding every prediction any of the saved states recorded."""
    cls, prob = torch.full((n,), -1, dtype=torch.long), torch.full((n,), float("nan"))
    for ex in results:
        if ex.pred_class is not None and len(ex.pred_class) == n:
            have = ex.pred_class >= 0
            cls[have], prob[have] = ex.pred_class[have], ex.pred_prob[have]
    return cls, prob


def _advance(ex: Examples, target: Target, acts: dict, ids: torch.Tensor) -> None:
    """Merge the batch images this state has not seen yet (resumed states may be past part of a batch)."""
    nxt = ex.meta["next"]
    fresh = ids >= nxt
    if bool(fresh.any()):
        maps = unit_maps(acts[target.layer], target.sae, target.tokens)
        ex.topk.update(maps[fresh.to(maps.device)], ids[fresh])
    last = int(ids[-1])
    ex.meta["skipped"] += sorted(set(range(nxt, last + 1)) - set(ids.tolist()))
    ex.meta["next"] = max(nxt, last + 1)


def _finish(ex: Examples, dataset) -> None:
    """Mark a state complete and record the sources of every image it points to (top-k and sample)."""
    n = len(dataset)
    ex.meta["skipped"] += list(range(ex.meta["next"], n))
    ex.meta["next"] = n
    ex.meta["complete"] = True
    t = ex.topk
    ids = set(t.img_id.flatten().tolist()) | set(t.patch_id.flatten().tolist()) | set(t.sample_id.tolist())
    ex.sources = {i: dataset.source(i) for i in sorted(ids) if i >= 0}


def _stream(model, dataset, targets: dict[str, Target], states: dict[str, Examples], predictions: bool, opts: dict):
    """The one pass: from the smallest resume point, one forward per batch, each state updated with what it lacks."""
    layers = sorted({t.layer for t in targets.values()} | ({LOGITS} if predictions else set()))
    start = min(ex.meta["next"] for ex in states.values())
    if predictions:
        table = _merged_predictions(states.values(), len(dataset))
        for ex in states.values():
            ex.pred_class, ex.pred_prob = table
    bar = None
    if opts["progress"]:
        from tqdm.auto import tqdm

        desc = f"examples {next(iter(targets.values())).layer}" if len(targets) == 1 else f"examples x{len(targets)}"
        bar = tqdm(total=len(dataset), initial=start, desc=desc, unit="img")
    try:
        batches = iter_batches(dataset, opts["batch_size"], start=start, workers=opts["workers"])
        for nb, (idx, images) in enumerate(batches):
            ids = torch.tensor(idx)
            with torch.no_grad():
                acts = _forward(model, images, layers)
                if predictions:
                    table[0][ids], table[1][ids] = _predictions(acts[LOGITS])
                for name, t in targets.items():
                    _advance(states[name], t, acts, ids)
            if bar is not None:
                bar.update(idx[-1] + 1 - bar.n)
            if (nb + 1) % opts["checkpoint_every"] == 0:
                for name, t in targets.items():
                    if t.cache is not None:
                        states[name].save(t.cache)
        for name, t in targets.items():
            _finish(states[name], dataset)
            if t.cache is not None:
                states[name].save(t.cache)
    finally:
        if bar is not None:
            bar.close()


def dataset_examples_many(
    model,
    targets: Mapping[str, Target | str],
    dataset=None,
    *,
    k: int = 16,
    batch_size: int = 32,
    checkpoint_every: int = 20,
    n: int = 1024,
    sample_size: int = SAMPLE_SIZE,
    predictions: bool | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> dict[str, Examples]:
    """Dataset examples of several targets (layers, SAEs, ``"logits"``) in one pass over ``dataset``.

    ``targets`` maps a name to a :class:`Target` (or a layer name); the result maps the same names to
    :class:`Examples`. ``dataset``: a folder path, a dataset from :mod:`visfeat.data`, or None for the
    embedded set of ``n`` crops. Every batch goes through the model once, capturing all target layers
    (the pass stops after the deepest one unless logits are needed). ``sample_size``: images in the
    uniform sample behind ``histogram``/``quantile_images``. ``predictions`` (default: when the model
    has class labels) records each image's top-1 class and probability (``Examples.prediction``); it
    needs the full forward pass. Each target with a cache is saved every ``checkpoint_every`` batches
    and at the end; a rerun resumes from the smallest saved point, skipping what each target already
    has (a finished target is read back at once). ``workers``: processes decoding the images (the same
    results); default 0 for a model off CUDA, ``min(8, cpu count)`` on CUDA, where decoding would idle the GPU.
    """
    from ..data import image_dataset
    from ..models import load_model

    model = load_model(model)
    targets = _check_targets(model, targets)
    for what, value, least in (("k", k, 1), ("batch_size", batch_size, 1), ("checkpoint_every", checkpoint_every, 1)):
        if value < least:
            raise VisfeatError(f"{what} must be at least {least}, got {value}")
    if sample_size < 0:
        raise VisfeatError(f"sample_size must be 0 (no sample) or more, got {sample_size}")
    if workers is None:
        workers = min(8, os.cpu_count() or 1) if model.device.type == "cuda" else 0
    if workers < 0:
        raise VisfeatError(f"workers must be 0 (decode in this process) or more, got {workers}")
    predictions = model.labels is not None if predictions is None else bool(predictions)
    size = model.spec.size[0] if model.spec.size else 224
    if dataset is None or isinstance(dataset, (str, Path)):
        dataset = image_dataset(dataset, size=size, n=n)
    first = next(iter_batches(dataset, 1))[1]  # the first readable image (errors if none is)
    shared = {
        "model": model.name,
        "k": k,
        "dataset": getattr(dataset, "label", "dataset"),
        "fingerprint": dataset.fingerprint(),
        "images": len(dataset),
        "sample_size": sample_size,
        "predictions": predictions,
    }
    keys = {
        name: {**shared, "layer": t.layer, "feature": feature_id(t.sae), "tokens": t.tokens}
        for name, t in targets.items()
    }
    results = {name: _resume(t.cache, keys[name]) for name, t in targets.items()}
    new = {name: targets[name] for name, ex in results.items() if ex is None}
    results |= _start(model, new, first, keys, k, sample_size)
    pending = {name: ex for name, ex in results.items() if not ex.meta["complete"]}
    if pending:
        opts = {
            "batch_size": batch_size,
            "checkpoint_every": checkpoint_every,
            "progress": progress,
            "workers": workers,
        }
        _stream(model, dataset, {name: targets[name] for name in pending}, pending, predictions, opts)
    return results


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
    sample_size: int = SAMPLE_SIZE,
    predictions: bool | None = None,
    progress: bool = True,
) -> Examples:
    """Top-k images and patches per unit of ``layer`` (or per latent of ``sae``) over ``dataset``.

    The one-target case of :func:`dataset_examples_many` (same arguments, same cache and resume).
    ``dataset``: a folder path, a dataset from :mod:`visfeat.data`, or None for the embedded set of
    ``n`` crops. ``tokens`` (token layers: all, cls, patch) defaults to the SAE's. With ``cache`` (a
    folder) the state is saved every ``checkpoint_every`` batches and at the end; a rerun with the
    same settings resumes (or returns the finished result at once).
    """
    target = {layer: Target(layer, sae, tokens, cache)}
    return dataset_examples_many(
        model,
        target,
        dataset,
        k=k,
        batch_size=batch_size,
        checkpoint_every=checkpoint_every,
        n=n,
        sample_size=sample_size,
        predictions=predictions,
        progress=progress,
    )[layer]


__all__ = [
    "Examples",
    "Target",
    "TopK",
    "dataset_examples",
    "dataset_examples_many",
    "receptive_field",
    "unit_maps",
]
