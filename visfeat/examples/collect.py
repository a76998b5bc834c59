"""The streaming collector of dataset examples: per unit of a layer (or SAE latent), what excites it most.

``dataset_examples_many(model, targets, images)`` streams a dataset (a folder, or the embedded image
set) through the model once, capturing every target layer in one forward per batch, and keeps per
unit of each target the top-k images (mean activation over positions), the top-k patches (best
single position, one per image) with their heatmaps, and each unit's value on a uniform sample of
``R`` images (its activation distribution). By default (``distinct``) the top images and patches of a
unit come from distinct source photos (at most one crop per photo; each file of a folder is its own).
Optionally each image's predicted class is recorded in the same pass. Memory is bounded by
``units x (k + R)``; with a cache per target the state is saved every few batches and a rerun resumes.
``dataset_examples(model, layer, images)`` is the one-target case.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import image_dataset, iter_batches, source_groups
from ..errors import VisfeatError
from ..hooks import LOGITS, activations
from ..models import load_model
from ..sae.vectors import grid_shape, to_vectors
from .geometry import patch_side
from .result import FILES, Examples
from .topk import SAMPLE_SIZE, TopK


def unit_maps(act: torch.Tensor, sae=None, tokens: str = "all") -> torch.Tensor:
    """Activation per unit and position ``[B, U, P]``: the layer's channels, or an SAE's latents."""
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


def _tensor(act) -> torch.Tensor:
    """A layer output as one tensor (the first element of a tuple output)."""
    return act[0] if isinstance(act, (tuple, list)) else act


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
    """The saved state in ``cache`` if it has the same settings; None if there is none; an error otherwise.

    A state saved before the ``distinct`` setting existed kept duplicates: it counts as ``distinct=False``.
    """
    if cache is None or not (cache / FILES[1]).exists():
        return None
    result = Examples.load(cache)
    old = {kk: result.meta.get(kk, False if kk == "distinct" else None) for kk in key}
    if old != key:
        raise VisfeatError(
            f"{cache} holds dataset examples of other settings ({old}); expected {key}. "
            "Pass another cache folder or delete this one"
        )
    return result


def _forward(model, images: torch.Tensor, layers: list[str]) -> dict:
    """Every layer's output in one forward pass, stopping after the deepest (copies: in-place ops can't alter them)."""
    x = model.preprocess(images.to(model.device))
    return activations(model.module, x, layers, True, model.logits_layer, copy=len(layers) > 1)


def _start(model, targets: dict[str, Target], first: torch.Tensor, keys: dict, k: int, r: int) -> dict[str, Examples]:
    """Empty states for targets without a saved one, from one probe forward on the first image."""
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
            sides[t.layer, grid] = patch_side(model, t.layer, size, probe, grid)
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
        topk = TopK(maps.shape[1], k, maps.shape[2], sample_size=r, distinct=keys[name]["distinct"])
        out[name] = Examples(topk, meta)
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


def _advance(ex: Examples, target: Target, acts: dict, ids: torch.Tensor, groups: torch.Tensor | None) -> None:
    """Merge the batch images this state has not seen yet (resumed states may be past part of a batch);
    ``groups [N]``: every image's source group, for a distinct state."""
    nxt = ex.meta["next"]
    fresh = ids >= nxt
    if bool(fresh.any()):
        maps = unit_maps(acts[target.layer], target.sae, target.tokens)
        ex.topk.update(maps[fresh.to(maps.device)], ids[fresh], groups[ids[fresh]] if ex.topk.distinct else None)
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
                    _advance(states[name], t, acts, ids, opts["groups"])
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
    distinct: bool = True,
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
    ``distinct`` (default on): a unit's top images, and its top patches, come from distinct source photos
    (``dataset.group(i)``: the photo of a crop; each file of a folder is its own), so that k crops of one
    photo do not fill the top k; it is part of the cache settings. False keeps the plain top k.
    """
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
    size = model.input_size[0]
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
        "distinct": bool(distinct),
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
            "groups": source_groups(dataset) if distinct else None,
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
    distinct: bool = True,
) -> Examples:
    """Top-k images and patches per unit of ``layer`` (or per latent of ``sae``) over ``dataset``.

    The one-target case of :func:`dataset_examples_many` (same arguments, same cache and resume).
    ``dataset``: a folder path, a dataset from :mod:`visfeat.data`, or None for the embedded set of
    ``n`` crops. ``tokens`` (token layers: all, cls, patch) defaults to the SAE's. With ``cache`` (a
    folder) the state is saved every ``checkpoint_every`` batches and at the end; a rerun with the
    same settings resumes (or returns the finished result at once). ``distinct`` (default on): the top
    images and patches of a unit come from distinct source photos (at most one crop per photo).
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
        distinct=distinct,
    )[layer]
