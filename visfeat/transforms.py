"""Random image transforms applied before every forward pass, so visualizations are robust.

A transform is a callable ``(images [B, 3, H, W], generator) -> images``; every image of the batch
draws its own random parameters, on the images' device. :func:`compose` chains transforms.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _choice(g: torch.Generator, n: int, values: Sequence[float]) -> torch.Tensor:
    values = torch.as_tensor(list(values), dtype=torch.float32)
    return values[torch.randint(len(values), (n,), generator=g)]


def _warp(x: torch.Tensor, theta: torch.Tensor, size: tuple[int, int], padding: str = "reflection") -> torch.Tensor:
    """Sample ``x`` through per-image affine maps ``theta`` [B, 2, 3] (output -> input, normalized)."""
    theta = theta.to(x.device, x.dtype)
    grid = F.affine_grid(theta, [x.shape[0], x.shape[1], *size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def compose(*transforms: Transform) -> Transform:
    """Apply transforms left to right."""

    def composed(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        for t in transforms:
            x = t(x, g)
        return x

    composed.parts = transforms  # type: ignore[attr-defined]
    return composed


def pad(width: int, mode: str = "constant", value: float = 0.5) -> Transform:
    """Pad every side by ``width`` pixels (constant grey by default, or "reflect")."""

    def t(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if mode == "constant":
            return F.pad(x, (width,) * 4, mode="constant", value=value)
        return F.pad(x, (width,) * 4, mode=mode)

    return t


def jitter(d: int) -> Transform:
    """Crop each image at its own random integer offset in [0, d]; the output is ``d`` pixels smaller."""

    def t(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        oy = torch.randint(0, d + 1, (b,), generator=g).to(x.device)
        ox = torch.randint(0, d + 1, (b,), generator=g).to(x.device)
        rows = (oy[:, None] + torch.arange(h - d, device=x.device))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w - d, device=x.device))[:, None, None, :]
        bi = torch.arange(b, device=x.device)[:, None, None, None]
        ci = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        return x[bi, ci, rows, cols]

    return t


def random_affine(
    scales: Sequence[float] = (1.0,), angles: Sequence[float] = (0.0,), translate: float = 0.0
) -> Transform:
    """Per-image zoom (factor > 1 zooms in), rotation (degrees) and shift (fraction of the side),
    in one resampling; the size is kept and the border reflects."""

    def t(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b = x.shape[0]
        s = _choice(g, b, scales)
        a = _choice(g, b, angles) * math.pi / 180
        tx, ty = _uniform(g, b, -translate, translate) * 2, _uniform(g, b, -translate, translate) * 2
        cos, sin = torch.cos(a) / s, torch.sin(a) / s
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
        return _warp(x, theta, tuple(x.shape[-2:]))

    return t


def random_scale(scales: Sequence[float]) -> Transform:
    """Per-image zoom by a factor drawn from ``scales``."""
    return random_affine(scales=scales)


def random_rotate(angles: Sequence[float]) -> Transform:
    """Per-image rotation by an angle (degrees) drawn from ``angles``."""
    return random_affine(angles=angles)


def crops_with_noise(
    n_size: tuple[float, float] = (0.25, 1.0), noise: float = 0.05, out_size: int | None = None
) -> Transform:
    """MACO-style: each image is replaced by a random square crop (side a fraction in ``n_size`` of
    the image) resized back, plus Gaussian noise of std ``noise``."""

    def t(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        frac = _uniform(g, b, *n_size)
        cx = (torch.rand(b, generator=g) * 2 - 1) * (1 - frac)
        cy = (torch.rand(b, generator=g) * 2 - 1) * (1 - frac)
        zero = torch.zeros(b)
        theta = torch.stack([torch.stack([frac, zero, cx], 1), torch.stack([zero, frac, cy], 1)], 1)
        size = (out_size, out_size) if out_size else (h, w)
        y = _warp(x, theta, size, padding="border")
        if noise:
            eps = torch.randn(y.shape, generator=g).to(y.device, y.dtype)
            y = y + noise * eps
        return y

    return t


def resize(size: int | tuple[int, int]) -> Transform:
    """Bilinear resize to a fixed size (e.g. the model's input size)."""
    size = (size, size) if isinstance(size, int) else tuple(size)

    def t(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if tuple(x.shape[-2:]) == size:
            return x
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    return t


def standard(pad_mode: str = "constant") -> Transform:
    """Lucid's robustness set: pad 12 (grey, or ``pad_mode="reflect"``), jitter 8, zoom 0.95-1.05,
    rotate +-10 degrees, jitter 4."""
    return compose(
        pad(12, pad_mode),
        jitter(8),
        random_affine(scales=[1 + (i - 5) / 50 for i in range(11)], angles=range(-10, 11)),
        jitter(4),
    )


def maco_crops(noise: float = 0.05) -> Transform:
    """MACO's augmentation: random crops of 25-100% with noise, plus small jitter."""
    return compose(jitter(4), crops_with_noise((0.25, 1.0), noise))
