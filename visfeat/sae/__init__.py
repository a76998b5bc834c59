"""Sparse autoencoders on a layer's activations: collect, train, evaluate, save, load, visualize.

One module per concept: ``base`` (the SAE class and its config), one file per variant (``topk``,
``batchtopk``, ``relu``), ``vectors`` (layer output <-> activation vectors), ``collect`` (activations
to disk shards), ``train`` (the training loop), ``metrics`` (FVU, L0, dead latents, downstream
effect), ``io`` (safetensors + JSON). Variants are registered by name: :func:`create`.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import unknown
from .base import SAE, SAEConfig, SAEError

_VARIANTS: dict[str, type[SAE]] = {}


def register_variant(name: str) -> Callable[[type[SAE]], type[SAE]]:
    """Class decorator: make ``create(name, ...)`` build this SAE variant."""

    def deco(cls: type[SAE]) -> type[SAE]:
        if name in _VARIANTS:
            raise SAEError(f"SAE variant {name!r} is registered twice")
        _VARIANTS[name] = cls
        return cls

    return deco


def list_variants() -> list[str]:
    """Registered SAE variant names."""
    return sorted(_VARIANTS)


def create(variant: str = "topk", d_in: int = 0, d_sae: int = 0, **kwargs) -> SAE:
    """A fresh SAE of a registered variant; ``kwargs`` are :class:`SAEConfig` fields."""
    if variant not in _VARIANTS:
        raise SAEError(unknown("SAE variant", variant, _VARIANTS))
    return from_config(SAEConfig(d_in=d_in, d_sae=d_sae, variant=variant, **kwargs))


def from_config(config: SAEConfig) -> SAE:
    if config.variant not in _VARIANTS:
        raise SAEError(unknown("SAE variant", config.variant, _VARIANTS))
    return _VARIANTS[config.variant](config)


from . import batchtopk, relu, topk  # noqa: E402, F401  (register the variants)
from .io import load, save  # noqa: E402
from .train import TrainConfig, train  # noqa: E402

__all__ = [
    "SAE",
    "SAEConfig",
    "SAEError",
    "TrainConfig",
    "create",
    "from_config",
    "list_variants",
    "load",
    "register_variant",
    "save",
    "train",
]
