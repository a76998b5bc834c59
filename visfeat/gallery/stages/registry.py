"""The stages of a build, in the order they plan, run and draw: every module of this package that sets
``STAGE``, sorted by ``Stage.order``; each must come after the stages it reads (``Stage.after``)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ...errors import VisfeatError
from .base import Stage


@dataclass(frozen=True)
class Stages:
    """An ordered, immutable set of stages (a build's registry)."""

    items: tuple[Stage, ...]

    def __post_init__(self) -> None:
        names = [s.name for s in self.items]
        if len(set(names)) != len(names) or not all(names):
            raise VisfeatError(f"stages need distinct, non-empty names, got {names}")
        done: set[str] = set()
        for s in self.items:
            missing = [a for a in s.after if a not in done]
            if missing:
                raise VisfeatError(f"stage {s.name!r} reads {missing}, which must come before it")
            done.add(s.name)

    def __iter__(self) -> Iterator[Stage]:
        return iter(self.items)

    def __getitem__(self, name: str) -> Stage:
        for s in self.items:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.items)

    def add(self, *stages: Stage) -> Stages:
        """These stages and ``stages``, in order (``Stage.order``)."""
        return Stages(_ordered([*self.items, *stages]))


def _ordered(stages: list[Stage]) -> tuple[Stage, ...]:
    """By ``order``, then name: a stable, deterministic order (checked against ``after`` by :class:`Stages`)."""
    return tuple(sorted(stages, key=lambda s: (s.order, s.name)))


@cache
def default_stages() -> Stages:
    """The package's stages: every module of :mod:`visfeat.gallery.stages` that defines ``STAGE``."""
    found = []
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        stage = getattr(importlib.import_module(f"{__package__}.{info.name}"), "STAGE", None)
        if isinstance(stage, Stage):
            found.append(stage)
    return Stages(_ordered(found))
