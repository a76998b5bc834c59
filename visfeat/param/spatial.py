"""Pixel and Fourier image parameterizations."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import VisfeatError
from .color import to_logits, to_rgb


def rfft_freqs(h: int, w: int) -> torch.Tensor:
    """Frequency magnitude (cycles per pixel) of every rfft2 coefficient: [h, w // 2 + 1]."""
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return (fx**2 + fy**2).sqrt()


def spectrum_scale(h: int, w: int, decay: float) -> torch.Tensor:
    """The Fourier image's per-coefficient scale 1/f^decay, [h, w // 2 + 1] (f at least one cycle per image)."""
    return 1.0 / rfft_freqs(h, w).clamp(min=1.0 / max(h, w)) ** decay


#: Where a Fourier image's low-pass starts to fall, as a share of its cutoff.
TAPER = 0.4


def lowpass(freqs: torch.Tensor, cutoff: float, taper: float = TAPER) -> torch.Tensor:
    """Weights of a raised-cosine low-pass: 1 up to ``taper * cutoff`` x Nyquist, 0 from ``cutoff`` x Nyquist.
    A smooth fall, not a step: a step rings, and the optimizer piles the picture's energy at the last frequency."""
    hi = cutoff * 0.5  # Nyquist: 0.5 cycles per pixel
    lo = taper * hi
    if lo >= hi:  # taper 1: a step
        return (freqs <= hi).float()
    t = ((freqs - lo) / (hi - lo)).clamp(0, 1)
    return 0.5 * (1 + torch.cos(torch.pi * t))


class PixelImage(nn.Module):
    """Each pixel is a parameter (in the decorrelated colour basis, squashed by a sigmoid)."""

    def __init__(self, init: torch.Tensor, decorrelate: bool) -> None:
        super().__init__()
        self.pixels = nn.Parameter(init)
        self.decorrelate = decorrelate

    def forward(self) -> torch.Tensor:
        return to_rgb(self.pixels, self.decorrelate)


#: Where a coarse-to-fine Fourier image's pass band starts (``fourier(grow=...)``), as a share of Nyquist.
GROW_FROM = 0.15
#: The colour logit past which ``fourier(headroom=...)`` pushes back: sigmoid(4) = 0.982, within 4.6 of 255 levels.
HEADROOM_EDGE = 4.0


class FourierImage(nn.Module):
    """The image's 2-D spectrum is the parameter, scaled by 1/f^decay so all frequencies learn alike.
    With ``grow`` > 0 the pass band opens from ``GROW_FROM`` x Nyquist to ``cutoff`` (or to every frequency) over the
    first ``grow`` steps, at most half of them, as ``render`` reports them through :meth:`set_progress`.
    ``penalty()``: ``headroom`` x the mean squared excess of the colour logits beyond +-``HEADROOM_EDGE``, per image."""

    def __init__(
        self,
        init: torch.Tensor,
        size: tuple[int, int],
        decay: float,
        decorrelate: bool,
        cutoff: float | None = None,
        grow: int = 0,
        headroom: float = 0.0,
    ) -> None:
        super().__init__()
        h, w = size
        self.size = size
        self.spectrum = nn.Parameter(init)  # [B, 3, h, w//2+1, 2] (real, imag)
        base, freqs = spectrum_scale(h, w, decay).to(init.device), rfft_freqs(h, w).to(init.device)
        self.register_buffer("base", base)
        self.register_buffer("freqs", freqs)
        # the band fully open, computed once: the scale of every step after the growth and of the final picture
        self.register_buffer("full", base if cutoff is None else base * lowpass(freqs, cutoff))
        self.register_buffer("scale", self.full)
        self.grow = grow
        # no cutoff: the band ends where the cosine's flat part covers the corner frequency (sqrt 2 x Nyquist)
        self.end = cutoff if cutoff is not None else 2**0.5 / TAPER
        self.decorrelate = decorrelate
        self.headroom = headroom
        self.logits: torch.Tensor | None = None  # the last forward's colour logits, read by penalty()

    def set_progress(self, step: int, steps: int) -> None:
        """Where the optimization is: ``step`` of ``steps`` done (``step == steps`` for the final picture)."""
        if self.grow > 0:
            opened = step / min(self.grow, steps / 2)
            band = GROW_FROM + (self.end - GROW_FROM) * opened
            self.scale = self.full if opened >= 1 else self.base * lowpass(self.freqs, band)

    def forward(self) -> torch.Tensor:
        spec = torch.view_as_complex(self.spectrum) * self.scale
        img = torch.fft.irfft2(spec, s=self.size, norm="ortho") / 4.0
        logits = to_logits(img, self.decorrelate)
        self.logits = logits if self.headroom else None
        return torch.sigmoid(logits)

    def penalty(self) -> torch.Tensor:
        """Per image [B]: ``headroom`` x the mean squared excess of the last picture's colour logits beyond
        +-HEADROOM_EDGE. It keeps pixels off pure black and white, where the sigmoid flattens and detail is lost."""
        if self.logits is None:
            return torch.zeros(len(self.spectrum), device=self.spectrum.device)
        excess = (self.logits.abs() - HEADROOM_EDGE).clamp(min=0)
        return self.headroom * excess.pow(2).mean((1, 2, 3))


@dataclass(frozen=True)
class Pixel:
    """Settings of a pixel parameterization; ``build`` makes the module for a batch."""

    size: int | tuple[int, int] = 128
    sd: float = 0.01  # std of the random init
    decorrelate: bool = True

    def __post_init__(self) -> None:
        check_size(self.size, "pixel")

    def build(self, batch: int, generator: torch.Generator, device: torch.device | str = "cpu") -> PixelImage:
        h, w = _pair(self.size)
        init = torch.randn(batch, 3, h, w, generator=generator) * self.sd
        return PixelImage(init.to(device), self.decorrelate)


@dataclass(frozen=True)
class Fourier:
    """Settings of a Fourier parameterization with 1/f^decay spectrum scaling (Lucid's default)."""

    size: int | tuple[int, int] = 128
    sd: float = 0.01  # std of the random init of the spectrum
    decay: float = 1.0  # spectrum scaling 1/f^decay; 1 matches natural images
    decorrelate: bool = True
    cutoff: float | None = None  # low-pass: nothing above this share of Nyquist (radially, see lowpass); None: all
    grow: int = 0  # coarse to fine: the pass band opens over this many first steps, at most half (FourierImage)
    headroom: float = 0.0  # weight of penalty() on colour logits beyond +-HEADROOM_EDGE (FourierImage); 0: none

    def __post_init__(self) -> None:
        check_size(self.size, "fourier")
        if self.cutoff is not None and not 0 < self.cutoff <= 1.5:
            raise VisfeatError(
                f"fourier cutoff is a share of the Nyquist frequency in (0, 1.5], e.g. 0.5, got {self.cutoff!r}"
            )
        if not isinstance(self.grow, int) or isinstance(self.grow, bool) or self.grow < 0:
            raise VisfeatError(
                f"fourier grow is the number of first steps over which the image goes coarse to fine, a whole "
                f"number >= 0 (e.g. 32; 0: no growth), got {self.grow!r}"
            )
        number = isinstance(self.headroom, (int, float)) and not isinstance(self.headroom, bool)
        if not number or not 0 <= self.headroom < float("inf"):
            raise VisfeatError(
                f"fourier headroom is the weight of the penalty on colour logits near pure black and white, a "
                f"number >= 0 (e.g. 1000; 0: none), got {self.headroom!r}"
            )

    def build(self, batch: int, generator: torch.Generator, device: torch.device | str = "cpu") -> FourierImage:
        h, w = _pair(self.size)
        init = torch.randn(batch, 3, h, w // 2 + 1, 2, generator=generator) * self.sd
        return FourierImage(
            init.to(device), (h, w), self.decay, self.decorrelate, self.cutoff, self.grow, self.headroom
        )


def check_size(size: int | tuple[int, int], kind: str) -> None:
    """Refuse an image size that is not positive: 0 would be an empty image, not a default."""
    try:
        h, w = _pair(size)
    except (TypeError, ValueError, IndexError):
        h = w = 0
    if h < 1 or w < 1:
        raise VisfeatError(f"{kind} image size must be a positive number of pixels, e.g. size=128, got {size!r}")


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))
