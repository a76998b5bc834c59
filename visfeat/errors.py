"""Exceptions raised for user errors: each says what was received, what was expected and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class VisfeatError(Exception):
    """Base class of every error visfeat raises on bad input."""


class UnknownLayerError(VisfeatError, KeyError):
    """A layer name that the model does not have."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class UnitError(VisfeatError, ValueError):
    """A unit (channel, neuron position, class, token) outside what the layer offers."""


class OfflineError(VisfeatError, OSError):
    """A download that failed; the message says how to pass a local file instead."""


class NonFiniteObjectiveError(VisfeatError, FloatingPointError):
    """The objective became NaN or infinite during optimization."""


class CircuitError(VisfeatError, ValueError):
    """A circuit request that the model's graph cannot answer (no path, untraceable model, bad mode)."""


class NonlinearPathError(CircuitError):
    """Exact mode met an op that is not linear in the source layer."""


def closest(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """The candidates closest to ``name``, for "did you mean" hints."""
    candidates = list(candidates)
    found = difflib.get_close_matches(name, candidates, n=n, cutoff=0.5)
    if not found:
        found = [c for c in candidates if name.lower() in c.lower()][:n]
    return found


def unknown(kind: str, name: str, candidates: Iterable[str]) -> str:
    """Message for an unknown name, listing the closest valid ones."""
    candidates = list(candidates)
    hint = closest(name, candidates)
    msg = f"unknown {kind} {name!r}"
    if hint:
        msg += f"; closest: {', '.join(hint)}"
    elif candidates:
        msg += f"; {len(candidates)} known, e.g. {', '.join(candidates[:5])}"
    return msg
