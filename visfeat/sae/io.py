"""Save and load SAEs: ``NAME.safetensors`` (weights) beside ``NAME.json`` (config, state, metrics)."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch

from ..images import atomic_write
from ..version import __version__
from .base import SAE, SAEConfig, SAEError
from .registry import from_config

FORMAT = "visfeat-sae/1"


def paths(path: str | Path) -> tuple[Path, Path]:
    """The weights and config paths for ``path`` (with or without a suffix)."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".safetensors", ".json") else p
    # names often hold layer names with dots (blocks.4): append, never replace a "suffix"
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save(sae: SAE, path: str | Path, metrics: dict | None = None, extra: dict | None = None) -> Path:
    """Write the SAE atomically; returns the ``.safetensors`` path."""
    from safetensors.torch import save as st_save

    weights, config = paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in sae.state_dict().items()}
    tensors["initialized"] = tensors["initialized"].to(torch.uint8)
    meta = {
        "format": FORMAT,
        "config": sae.config.to_dict(),
        "state": sae.extra_state(),
        "normalization": {"kind": "scalar", "scale": float(sae.scale), "note": "encoder input = x * scale"},
        "metrics": metrics or {},
        **(extra or {}),
        "versions": {"visfeat": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    atomic_write(weights, st_save(tensors))
    atomic_write(config, json.dumps(meta, indent=2).encode())
    return weights


def read_meta(path: str | Path) -> dict:
    """The JSON side of a saved SAE (config, metrics), checked for format."""
    _, config = paths(path)
    try:
        meta = json.loads(config.read_text())
    except FileNotFoundError as e:
        raise SAEError(f"SAE config {config} not found; an SAE is a .safetensors file with a .json beside it") from e
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SAEError(f"SAE config {config} is corrupt ({e}); retrain or restore the file") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "config" not in meta:
        raise SAEError(f"{config} is not a visfeat SAE config (expected format {FORMAT!r})")
    return meta


def load(path: str | Path, model=None, layer: str | None = None, device: str | torch.device = "cpu") -> SAE:
    """Load an SAE; with ``model`` / ``layer`` given, check that it was trained on them."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights, _ = paths(path)
    meta = read_meta(path)
    config = SAEConfig.from_dict(meta["config"])
    if model is not None:
        name = model if isinstance(model, str) else model.name
        if config.model and config.model != name:
            raise SAEError(
                f"SAE {weights.name} was trained on model {config.model!r}, not {name!r}; load it with that model"
            )
    if layer is not None and config.layer and config.layer != layer:
        raise SAEError(
            f"SAE {weights.name} was trained on layer {config.layer!r}, not {layer!r}; "
            f"use it with layer {config.layer!r} or train one for {layer!r}"
        )
    if model is not None and not isinstance(model, str) and config.layer:
        info = model.layer(config.layer)
        if info.channels is not None and info.channels != config.d_in:
            raise SAEError(f"SAE expects {config.d_in}-wide vectors but layer {config.layer!r} has {info.channels}")
    try:
        tensors = load_file(str(weights))
    except FileNotFoundError as e:
        raise SAEError(f"SAE weights {weights} not found (the .json is there); restore the file or retrain") from e
    except (SafetensorError, OSError) as e:
        raise SAEError(f"SAE weights {weights} are corrupt ({e}); retrain or restore the file") from e
    sae = from_config(config)
    tensors["initialized"] = tensors.get("initialized", torch.tensor(1)).bool()
    try:
        sae.load_state_dict(tensors, strict=True)
    except RuntimeError as e:
        raise SAEError(
            f"SAE weights {weights} do not match its config ({e}); the two files are from different SAEs"
        ) from e
    return sae.to(device).eval()
