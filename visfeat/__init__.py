"""visfeat: look inside vision models (feature visualization, SAEs, circuits, galleries)."""

from __future__ import annotations

from . import cpu, objectives, param, transforms
from .errors import VisfeatError
from .models import InputSpec, Model, list_models, load_model
from .render import RenderResult, evaluate, render

__version__ = "0.1.0"

__all__ = [
    "InputSpec",
    "Model",
    "RenderResult",
    "VisfeatError",
    "cpu",
    "evaluate",
    "list_models",
    "load_model",
    "objectives",
    "param",
    "render",
    "transforms",
]
