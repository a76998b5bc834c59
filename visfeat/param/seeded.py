"""Seeded images: a Fourier parameterization whose start is given photos, not noise (feature accentuation).

The photo is mapped back through the Fourier image's own steps (sigmoid, colour decorrelation, the 1/f^decay
scaling), so the parameter is the photo's spectrum in the coordinates :class:`~visfeat.param.spatial.FourierImage`
optimizes: the first image equals the photo, and every Adam step moves it in the same natural-image basis that
feature visualization uses (Hamblin et al., 2024, *Feature Accentuation*).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import VisfeatError
from .color import _COLOR
from .spatial import FourierImage, spectrum_scale


def _check_images(images: torch.Tensor) -> torch.Tensor:
    """The seed batch as float ``[B, 3, H, W]`` (a single ``[3, H, W]`` image gains a batch axis), checked."""
    if not torch.is_tensor(images):
        raise VisfeatError(f"seeded() needs the seed images as a tensor [B, 3, H, W] in [0, 1], got {type(images)}")
    x = images.detach().float()
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[1] != 3 or x.shape[0] < 1 or min(x.shape[-2:]) < 1:
        raise VisfeatError(
            f"seed images must be RGB [B, 3, H, W] (or one [3, H, W]), got shape {tuple(images.shape)}; "
            "load photos with visfeat.images.load_image"
        )
    if not bool(torch.isfinite(x).all()) or x.min() < 0 or x.max() > 1:
        raise VisfeatError("seed images must be finite values in [0, 1]; divide 8-bit pixels by 255")
    return x


@dataclass(frozen=True, eq=False)
class Seeded:
    """Settings of a Fourier parameterization that starts at ``images`` ([B, 3, H, W] in [0, 1])."""

    images: torch.Tensor
    decay: float = 1.0  # spectrum scaling 1/f^decay, as in fourier()
    decorrelate: bool = True
    eps: float = 1e-3  # seed pixels are clamped into [eps, 1 - eps]: the sigmoid never reaches 0 or 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", _check_images(self.images))
        if not 0 < self.eps < 0.5:
            raise VisfeatError(f"seeded(eps=...) must be in (0, 0.5) (e.g. 1e-3), got {self.eps}")

    @property
    def size(self) -> tuple[int, int]:
        """The seed images' (height, width): the size of the optimized image."""
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    def spectrum(self) -> torch.Tensor:
        """The seed images as the Fourier image's parameter ``[B, 3, H, W//2+1, 2]`` (its forward() inverted)."""
        h, w = self.size
        x = self.images.clamp(self.eps, 1 - self.eps)
        x = torch.log(x) - torch.log1p(-x)  # the sigmoid's inverse
        if self.decorrelate:
            x = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(_COLOR), x)
        spec = torch.fft.rfft2(x * 4.0, norm="ortho") / spectrum_scale(h, w, self.decay)
        return torch.view_as_real(spec).contiguous()

    def build(self, batch: int, generator: torch.Generator, device: torch.device | str = "cpu") -> FourierImage:
        """The image module for ``batch`` images: the seeds (one seed is repeated; the generator is not used)."""
        n = self.images.shape[0]
        if batch != n and n != 1:
            raise VisfeatError(f"seeded() holds {n} images but {batch} were asked for; give one seed per image")
        init = self.spectrum()
        if n == 1 and batch > 1:
            init = init.expand(batch, *init.shape[1:]).clone()
        return FourierImage(init.to(device), self.size, self.decay, self.decorrelate)
