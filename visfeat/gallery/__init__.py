"""Static HTML galleries: a TOML spec → plan (jobs keyed by recipe, from every stage) → result store → site.

``build_gallery("gallery/demo.toml", "site")`` (or ``visfeat gallery build``) renders every unit the spec
names, finds its dataset examples, reads its weights from the layers around it, and writes one page per
unit that opens from disk. See ``docs/gallery.md``; how to add a stage: ``docs/architecture.md``.
"""

from __future__ import annotations

from .build import BuildReport, build_gallery, calibrate, estimate
from .checks import SpecError
from .context import load_gallery_model
from .plan import Plan, make_plan
from .spec import GallerySpec, load_spec, parse_spec
from .stages import Stage, Stages, default_stages

__all__ = [
    "BuildReport",
    "GallerySpec",
    "Plan",
    "SpecError",
    "Stage",
    "Stages",
    "build_gallery",
    "calibrate",
    "default_stages",
    "estimate",
    "load_gallery_model",
    "load_spec",
    "make_plan",
    "parse_spec",
]
