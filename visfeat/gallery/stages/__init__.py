"""Gallery stages, one module each (SAEs, render, dataset examples, weights, trust, circuits), and the registry
that finds them: see :mod:`visfeat.gallery.stages.base` for what a stage is."""

from __future__ import annotations

from .base import REFERENCE, Group, Job, Label, Link, Panel, Rates, Record, Stage, UnitView
from .registry import Stages, default_stages

__all__ = [
    "REFERENCE",
    "Group",
    "Job",
    "Label",
    "Link",
    "Panel",
    "Rates",
    "Record",
    "Stage",
    "Stages",
    "UnitView",
    "default_stages",
]
