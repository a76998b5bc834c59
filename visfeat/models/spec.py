"""InputSpec: how a [0, 1] image batch becomes the model's input."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import VisfeatError


@dataclass(frozen=True)
class InputSpec:
    """What a model expects. Images everywhere in visfeat are float NCHW in [0, 1]."""

    size: tuple[int, int] | None = (224, 224)  # (H, W) the model was trained at; None = any size
    fixed_size: bool = False  # True when other sizes fail (e.g. a ViT without pos-embed resizing)
    channels: int = 3  # input channels; grayscale models take the mean of the RGB image
    value_range: tuple[float, float] = (0.0, 1.0)  # [0, 1] is mapped linearly onto this range
    mean: tuple[float, ...] = (0.0,)  # then (x - mean) / std, per channel (one value: every channel)
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise VisfeatError(f"InputSpec.channels must be 1 or 3, got {self.channels}")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if len(v) not in (1, self.channels):
                raise VisfeatError(f"InputSpec.{name} has {len(v)} values; give 1 or {self.channels}")
        if any(s <= 0 for s in self.std):
            raise VisfeatError(f"InputSpec.std must be positive, got {self.std}")

    @classmethod
    def imagenet(cls, size: int | tuple[int, int] = 224) -> InputSpec:
        """The usual torchvision/timm ImageNet normalization."""
        return cls(size=_pair(size), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Map a [0, 1] NCHW RGB batch to the model's input."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise VisfeatError(f"expected an RGB batch [B, 3, H, W] in [0, 1], got shape {tuple(images.shape)}")
        if self.fixed_size and self.size is not None and tuple(images.shape[-2:]) != tuple(self.size):
            raise VisfeatError(
                f"this model takes {self.size[0]}x{self.size[1]} images, got {images.shape[-2]}x{images.shape[-1]}; "
                f"render with size={self.size[0]} or resize the images"
            )
        x = images if self.channels == 3 else images.mean(1, keepdim=True)
        lo, hi = self.value_range
        if (lo, hi) != (0.0, 1.0):
            x = x * (hi - lo) + lo
        if any(m != 0 for m in self.mean) or any(s != 1 for s in self.std):  # on the tuples: no device sync
            mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            x = (x - mean) / std
        return x


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))
