"""Checking a spec's TOML: every error names the key, its line, what was wrong and the fix.

tomllib does not report positions, so :class:`KeyLines` finds a key's line in the text. :class:`Checker` reads
typed values (whole numbers, finite floats, strings, booleans) with their bounds, so a NaN learning rate, a zero
step count or a string where a number belongs is refused before any model loads.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from ..errors import VisfeatError, closest


class SpecError(VisfeatError, ValueError):
    """A gallery spec that cannot be built: the message names the key, its line and the fix."""


class KeyLines:
    """Finds the line of a key in the TOML text."""

    def __init__(self, text: str):
        self.rows = text.splitlines()

    def of(self, path: tuple) -> int:
        """1-based line of ``path`` (e.g. ``("layers", 2, "units")``), else of the nearest enclosing table."""
        header = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\-]+)\s*\]\]?")
        table: tuple = ()
        count: dict[str, int] = {}
        best = 1
        for i, row in enumerate(self.rows, 1):
            m = header.match(row)
            if m:
                name = m[2].split(".")
                if m[1] == "[[":
                    count[name[0]] = count.get(name[0], -1) + 1
                table = (name[0], count[name[0]], *name[1:]) if name[0] in count else tuple(name)
                if table == path:
                    return i
                if path[: len(table)] == table:
                    best = i
                continue
            key = re.match(r"^\s*([A-Za-z0-9_\-]+)\s*=", row)
            if not key:
                continue
            here = (*table, key[1])
            if here == path:
                return i
            if path[: len(here)] == here:
                best = i  # an inline table or array holding the key
        return best


def where(path: tuple) -> str:
    """``("layers", 2, "units")`` -> ``layers[2].units``."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def error_at(text: str, source: str, path: tuple, msg: str) -> SpecError:
    """The error about ``path`` of a spec's text, with its line."""
    return SpecError(f"{source}:{KeyLines(text).of(path)}: {where(path)}: {msg}")


_MISSING = object()


class Checker:
    """Typed reads from a spec's tables; each failure raises a :class:`SpecError` naming the key and its line."""

    def __init__(self, text: str, source: str):
        self.text, self.source = text, source

    def fail(self, path: tuple, msg: str):
        raise error_at(self.text, self.source, path, msg)

    def keys(self, table: dict, allowed: Iterable[str], path: tuple) -> None:
        allowed = sorted(allowed)
        for k in table:
            if k not in allowed:
                hint = closest(k, allowed, n=1)
                fix = f"did you mean {hint[0]!r}?" if hint else f"valid keys: {', '.join(allowed)}"
                self.fail((*path, k), f"unknown key {k!r}; {fix}")

    def table(self, parent: dict, key: str, path: tuple) -> dict:
        v = parent.get(key, {})
        if not isinstance(v, dict):
            self.fail((*path, key), f"expected a table ([{key}]), got {type(v).__name__}")
        return v

    def string(self, table: dict, key: str, path: tuple, default=None, pattern: str | None = None, hint: str = ""):
        """A non-empty string (matching ``pattern`` when given), or ``default`` when the key is absent."""
        v = table.get(key, _MISSING)
        if v is _MISSING:
            return default
        if not isinstance(v, str) or not v.strip():
            self.fail((*path, key), f"expected a non-empty string, got {_shown(v)}" + (f"; {hint}" if hint else ""))
        if pattern is not None and not re.fullmatch(pattern, v):
            self.fail((*path, key), f"{v!r}: {hint}")
        return v

    def boolean(self, table: dict, key: str, path: tuple, default=None):
        v = table.get(key, _MISSING)
        if v is _MISSING:
            return default
        if not isinstance(v, bool):
            self.fail((*path, key), f"expected true or false, got {_shown(v)}")
        return v

    def integer(self, table: dict, key: str, path: tuple, default=None, least: int = 1):
        """A whole number of at least ``least``."""
        v = table.get(key, _MISSING)
        if v is _MISSING:
            return default
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail((*path, key), f"expected a whole number, got {_shown(v)}")
        if v < least:
            self.fail((*path, key), f"must be at least {least}, got {v}")
        return v

    def number(self, table: dict, key: str, path: tuple, default=None, least: float = 0.0, positive: bool = False):
        """A finite number (an int is taken as a float) of at least ``least`` (above it when ``positive``)."""
        v = table.get(key, _MISSING)
        if v is _MISSING:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self.fail((*path, key), f"expected a number, got {_shown(v)}")
        v = float(v)
        if not math.isfinite(v):
            self.fail((*path, key), f"must be a finite number, got {v}")
        if v < least or (positive and v == least):
            self.fail((*path, key), f"must be {'above' if positive else 'at least'} {least:g}, got {v:g}")
        return v

    def choice(self, table: dict, key: str, path: tuple, choices: Iterable[str], default=None):
        """One of ``choices``; a near miss suggests the closest."""
        v = table.get(key, _MISSING)
        if v is _MISSING:
            return default
        choices = list(choices)
        if not isinstance(v, str) or v not in choices:
            hint = closest(v, choices, n=1) if isinstance(v, str) else []
            near = f" (did you mean {hint[0]!r}?)" if hint else ""
            self.fail((*path, key), f"unknown value {_shown(v)}; choose {', '.join(map(repr, choices))}{near}")
        return v


def _shown(v) -> str:
    return f"{type(v).__name__} {v!r}"
