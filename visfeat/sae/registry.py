"""The SAE variants by name: each variant module registers its class; :func:`create` builds one."""

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
    """An SAE of the variant ``config.variant`` built from ``config`` (weights freshly initialized)."""
    if config.variant not in _VARIANTS:
        raise SAEError(unknown("SAE variant", config.variant, _VARIANTS))
    return _VARIANTS[config.variant](config)
