"""The trust stage: how far a unit's picture can be believed, from what the other stages measured. Today one
signal: the visualization's held-out activation over the best dataset image's (below 1x is flagged: a real photo
excites the unit more than its own picture)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Panel, Stage, UnitView


@dataclass(frozen=True)
class TrustView(UnitView):
    held_out: float | None
    best: float | None
    images_seen: int | None
    ratio: float | None
    flag: bool

    def manifest(self) -> dict:
        return {"ratio": self.ratio}

    def grid(self) -> dict:
        return {"ratio": self.ratio, "flag": self.flag}


class TrustStage(Stage):
    name = "trust"
    order = 50
    after = ("render", "examples")
    unit_panels = (Panel("panels/trust.html", "wants", 20),)

    def unit_view(self, site, section, unit, views) -> TrustView | None:
        shown, seen = views.get("render"), views.get("examples")
        if shown is None or seen is None:
            return None
        held, best = shown.held_out, seen.best
        ratio = held / best if best and best > 0 else None
        return TrustView(held, best, seen.images_seen, ratio, ratio is not None and ratio < 1)


STAGE = TrustStage()
