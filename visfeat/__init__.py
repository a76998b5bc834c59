"""visfeat: look inside vision models (feature visualization, SAEs, circuits, galleries)."""

from __future__ import annotations

from . import cpu, objectives, param, transforms
from .accentuate import accentuate
from .errors import VisfeatError
from .models import InputSpec, Model, list_models, load_model
from .path_similarity import PathCheck, path_check, path_checks
from .presets import PRESETS, Preset, get_preset
from .render import RenderResult, evaluate, render
from .version import __version__

__all__ = [
    "PRESETS",
    "InputSpec",
    "Model",
    "PathCheck",
    "Preset",
    "RenderResult",
    "VisfeatError",
    "cpu",
    "__version__",
    "accentuate",
    "evaluate",
    "get_preset",
    "list_models",
    "load_model",
    "objectives",
    "param",
    "path_check",
    "path_checks",
    "render",
    "transforms",
]
