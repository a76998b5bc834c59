"""Image parameterizations: settings dataclasses whose ``build(batch, generator, device)`` returns a
module whose ``forward()`` gives the image batch [B, 3, H, W] in [0, 1]. Each image starts from its
own random init (a ``seeded`` one starts at given photos; a ``trigger``
one pastes masks and patterns onto them)."""

from __future__ import annotations

from .factory import Param, create, fourier, list_params, maco, pixel, seeded, trigger
from .maco import Maco, default_spectrum, spectrum_from_images
from .seeded import Seeded
from .spatial import Fourier, Pixel
from .trigger import Trigger, TriggerImages

__all__ = [
    "Fourier",
    "Maco",
    "Param",
    "Pixel",
    "Seeded",
    "Trigger",
    "TriggerImages",
    "create",
    "default_spectrum",
    "fourier",
    "list_params",
    "maco",
    "pixel",
    "seeded",
    "spectrum_from_images",
    "trigger",
]
