"""MACO: optimize only the phase of the spectrum; the magnitude is a fixed natural-image spectrum.

Fel et al., "Unlocking Feature Visualization for Deeper Networks with MAgnitude Constrained
Optimization" (2023). Fixing the magnitude keeps the image statistics natural, which matters most
for deep layers and ViTs. The default magnitude ships with visfeat (computed from the sample
photos by :func:`spectrum_from_images`); compute your own from any image folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import VisfeatError
from .color import to_rgb
from .spatial import check_size

_DEFAULT_SPECTRUM = Path(__file__).with_name("spectrum_default.npy")


def spectrum_from_images(images, size: int = 224) -> torch.Tensor:
    """Mean magnitude spectrum ``[3, size, size // 2 + 1]`` of images (tensors [3, H, W] in [0, 1],
    file paths, or a folder), each centre-cropped to a square and resized to ``size``."""
    from ..images import iter_images

    total, n = None, 0
    for img in iter_images(images):
        s = min(img.shape[-2:])
        top, left = (img.shape[-2] - s) // 2, (img.shape[-1] - s) // 2
        crop = img[:, top : top + s, left : left + s][None]
        crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
        mag = torch.fft.rfft2(crop - crop.mean((1, 2), keepdim=True), norm="ortho").abs()
        total = mag if total is None else total + mag
        n += 1
    if n == 0:
        raise VisfeatError("spectrum_from_images() found no images; give tensors, image files or a folder with images")
    return total / n


def default_spectrum() -> torch.Tensor:
    """The magnitude spectrum that ships with visfeat ([3, 224, 113])."""
    return torch.from_numpy(np.load(_DEFAULT_SPECTRUM).astype(np.float32))


def resize_spectrum(mag: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample an rfft2 magnitude ``[3, H, W//2+1]`` to another image size ``(h, w)``."""
    h, w = size
    if mag.shape[-2] == h and mag.shape[-1] == w // 2 + 1:
        return mag
    # Resample the centred (fftshifted along y) half-spectrum as an image, then shift back.
    centred = torch.fft.fftshift(mag, dim=-2)[None]
    out = F.interpolate(centred, size=(h, w // 2 + 1), mode="bilinear", align_corners=True)[0]
    return torch.fft.ifftshift(out, dim=-2)


class MacoImage(nn.Module):
    """Image = irfft2(magnitude * e^(i phase)), standardized, colour-mapped, squashed to [0, 1]."""

    def __init__(self, phase: torch.Tensor, magnitude: torch.Tensor, size: tuple[int, int], contrast: float) -> None:
        super().__init__()
        self.size = size
        self.phase = nn.Parameter(phase)  # [B, 3, h, w//2+1]
        self.register_buffer("magnitude", magnitude.to(phase.device))
        self.contrast = contrast

    def forward(self) -> torch.Tensor:
        spec = torch.polar(self.magnitude.expand_as(self.phase), self.phase)
        img = torch.fft.irfft2(spec, s=self.size, norm="ortho")
        img = (img - img.mean((2, 3), keepdim=True)) / (img.std((2, 3), keepdim=True) + 1e-8)
        return to_rgb(img * self.contrast, decorrelated=True)


@dataclass(frozen=True)
class Maco:
    """Settings of a MACO parameterization."""

    size: int | tuple[int, int] = 224
    spectrum: torch.Tensor | str | Path | None = None  # magnitude [3, H, W//2+1] or a .npy/.pt file; None = shipped
    contrast: float = 1.0  # std of each colour channel before the sigmoid

    def __post_init__(self) -> None:
        check_size(self.size, "maco")

    def magnitude(self, size: tuple[int, int]) -> torch.Tensor:
        spec = self.spectrum
        if spec is None:
            mag = default_spectrum()
        elif isinstance(spec, (str, Path)):
            p = Path(spec)
            mag = torch.from_numpy(np.load(p)) if p.suffix == ".npy" else torch.load(p, weights_only=True)
        else:
            mag = torch.as_tensor(spec)
        if mag.dim() != 3 or mag.shape[0] != 3:
            raise VisfeatError(f"a MACO spectrum must have shape [3, H, W//2+1], got {tuple(mag.shape)}")
        return resize_spectrum(mag.float(), size)

    def build(self, batch: int, generator: torch.Generator, device: torch.device | str = "cpu") -> MacoImage:
        h, w = (self.size, self.size) if isinstance(self.size, int) else self.size
        phase = (torch.rand(batch, 3, h, w // 2 + 1, generator=generator) * 2 - 1) * math.pi
        return MacoImage(phase.to(device), self.magnitude((h, w)), (h, w), self.contrast)
