"""Registry of named model loaders: register, list with a filter, create by name."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

from ..errors import VisfeatError, unknown
from .model import Model

_LOADERS: dict[str, Callable[..., Model]] = {}


def register_model(name: str) -> Callable[[Callable[..., Model]], Callable[..., Model]]:
    """Decorator: make ``load_model(name, **kwargs)`` call the decorated loader."""

    def deco(fn: Callable[..., Model]) -> Callable[..., Model]:
        if name in _LOADERS:
            raise VisfeatError(f"model {name!r} is registered twice")
        _LOADERS[name] = fn
        return fn

    return deco


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style wildcard (``timm:`` and ``torchvision:`` also load)."""
    return sorted(n for n in _LOADERS if fnmatch.fnmatch(n, pattern))


def get_loader(name: str) -> Callable[..., Model]:
    """The loader registered as ``name``; an unknown name lists the closest registered ones."""
    if name not in _LOADERS:
        raise VisfeatError(
            unknown("model", name, _LOADERS)
            + "; or use 'timm:NAME', 'torchvision:NAME', or Model(module, InputSpec(...)) for your own"
        )
    return _LOADERS[name]
