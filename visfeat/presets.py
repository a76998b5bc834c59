"""Render presets: named step / learning-rate / view budgets shared by ``render``, the CLI and galleries.

``draft`` is a quick look (the demo gallery), ``default`` is ``render``'s own defaults, ``heavy`` the
budget that approaches a unit's ceiling (``docs/quality.md``). ``render(..., preset="draft")``, ``visfeat
render --preset draft`` and a gallery spec's ``preset`` key all read :data:`PRESETS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from .errors import VisfeatError, unknown


@dataclass(frozen=True)
class Preset:
    """One render budget: optimization steps, Adam learning rate, random views per step, lr schedule, and the
    share of the steps, at the end, that see the picture without random transforms (``render(settle=...)``)."""

    name: str
    steps: int
    lr: float
    views: int
    lr_schedule: str
    settle: float
    about: str


#: The presets by name (read-only).
PRESETS = MappingProxyType(
    {
        p.name: p
        for p in (
            Preset("draft", 64, 0.10, 1, "constant", 0.125, "a quick look: 64 steps"),
            Preset("default", 256, 0.09, 1, "constant", 0.125, "render's defaults: 256 steps"),
            Preset("heavy", 4096, 0.05, 8, "cosine", 0.0, "near a unit's ceiling: 4096 steps x 8 views, cosine lr"),
        )
    }
)


def get_preset(name: str) -> Preset:
    """The preset called ``name``; an unknown name is an error that suggests the closest one."""
    if not isinstance(name, str) or name not in PRESETS:
        raise VisfeatError(unknown("preset", str(name), PRESETS) + f" (the presets: {', '.join(PRESETS)})")
    return PRESETS[name]
