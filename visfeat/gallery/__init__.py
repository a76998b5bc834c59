"""Static HTML galleries: a TOML spec → plan (jobs keyed by recipe) → result store → site.

``build_gallery("gallery/demo.toml", "site")`` (or ``visfeat gallery build``) renders every unit the spec
names, finds its dataset examples, reads its weights from the layers around it, and writes one page per
unit that opens from disk. See ``docs/gallery.md``.
"""

from __future__ import annotations

from .build import BuildReport, build_gallery, estimate
from .spec import PRESETS, GallerySpec, SpecError, load_spec, parse_spec

__all__ = [
    "PRESETS",
    "BuildReport",
    "GallerySpec",
    "SpecError",
    "build_gallery",
    "estimate",
    "load_spec",
    "parse_spec",
]
