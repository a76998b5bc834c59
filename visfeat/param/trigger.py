"""Trigger images: per class a mask and a pattern pasted onto fixed clean photos (Neural Cleanse, Wang et al. 2019).

The optimized parameters are, for each of ``classes`` candidate triggers, a low-resolution mask logit map (upsampled
bilinearly, then a sigmoid: values in [0, 1], one per pixel) and a full-resolution pattern logit image (a sigmoid:
RGB in [0, 1]). The module pastes every trigger onto clean images, ``x' = (1 - m) x + m p``, and returns the batch
``[classes * per_step, 3, H, W]`` (trigger-major). With ``per_step`` below the number of images, each optimization
step pastes on the next ``per_step`` photos of a shuffled cycle through all of them: a trigger fitted to a few fixed
photos can be a faint adversarial perturbation of those photos, one fitted to a stream of photos must be the patch
that works on any (the cost per step stays that of ``per_step`` photos). Its ``penalty()`` is each pasted image's
``lam * mean(m)``, the mask's L1 norm as a share of the image, which :func:`visfeat.render.render` subtracts from
the objective.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import VisfeatError


@dataclass(frozen=True, eq=False)
class Trigger:
    """Settings of ``classes`` triggers pasted on clean ``images`` [N, 3, H, W] in [0, 1]; ``lam``: mask penalties."""

    images: torch.Tensor
    classes: int = 1
    lam: tuple[float, ...] | float = 0.0  # per trigger (or one for all): weight of the mask's image share
    cells: int | None = None  # side of the mask logit grid (None: at most 56, full resolution below; 4 px at 224)
    mask_init: float = 0.3  # the mask's starting value everywhere
    ramp: int = 0  # penalty() calls (render steps) over which lam rises linearly from 0: find a trigger, then shrink it
    per_step: int | None = None  # photos pasted per step (None: all); fewer cycle through them (module docstring)

    def __post_init__(self) -> None:
        x = self.images
        if not torch.is_tensor(x) or x.dim() != 4 or x.shape[1] != 3 or x.shape[0] < 1:
            shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise VisfeatError(f"trigger() needs clean images [N, 3, H, W] in [0, 1], got {shape}")
        if self.classes < 1:
            raise VisfeatError(f"trigger(classes=...) must be at least 1, got {self.classes}")
        if self.ramp < 0:
            raise VisfeatError(f"trigger(ramp=...) is a number of steps (0: none), got {self.ramp}")
        if self.per_step is not None and not 1 <= self.per_step <= x.shape[0]:
            n = x.shape[0]
            raise VisfeatError(f"trigger(per_step=...) must be in 1..{n} (the images given), got {self.per_step}")
        if not 0 < self.mask_init < 1:
            raise VisfeatError(f"trigger(mask_init=...) must be in (0, 1), got {self.mask_init}")
        object.__setattr__(self, "images", x.detach().float().clamp(0, 1))
        if len(self.lams) != self.classes:
            raise VisfeatError(f"trigger(lam=...) gives {len(self.lams)} weights for {self.classes} triggers")

    @property
    def size(self) -> tuple[int, int]:
        """The clean images' (height, width)."""
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    @property
    def lams(self) -> tuple[float, ...]:
        """One mask penalty weight per trigger."""
        return tuple(float(v) for v in self.lam) if isinstance(self.lam, tuple) else (float(self.lam),) * self.classes

    @property
    def grid(self) -> int:
        """Side of the mask logit map."""
        return self.cells or min(max(self.size), 56)

    @property
    def shown(self) -> int:
        """Photos pasted per call: ``per_step``, or all of them."""
        return self.per_step or int(self.images.shape[0])

    def build(self, batch: int, generator: torch.Generator, device: torch.device | str = "cpu") -> TriggerImages:
        """The module for ``batch = classes * per_step`` pasted images; mask, pattern and the photos' cycle start
        from ``generator``."""
        n = self.shown
        if batch != self.classes * n:
            raise VisfeatError(
                f"trigger() pastes {self.classes} triggers on {n} images per step ({self.classes * n}), not {batch}"
            )
        start = torch.logit(torch.tensor(self.mask_init))
        mask = start + 0.1 * torch.randn(self.classes, 1, self.grid, self.grid, generator=generator)
        pattern = torch.randn(self.classes, 3, *self.size, generator=generator)
        lam = torch.tensor(self.lams, dtype=torch.float32)
        order = torch.randperm(self.images.shape[0], generator=generator).to(device)
        return TriggerImages(
            mask.to(device), pattern.to(device), self.images.to(device), lam.to(device), self.ramp, order, n
        )


class TriggerImages(nn.Module):
    """Masks and patterns (the parameters) pasted on fixed clean images; ``penalty()``: the masks' weighted share.
    With ``per_step`` each call with gradients on pastes on the next ``per_step`` photos of ``order`` (a cycle); a
    call without gradients (the final pictures) on the first ``per_step`` photos."""

    def __init__(
        self,
        mask: torch.Tensor,
        pattern: torch.Tensor,
        images: torch.Tensor,
        lam: torch.Tensor,
        ramp: int = 0,
        order: torch.Tensor | None = None,
        per_step: int | None = None,
    ):
        super().__init__()
        self.ramp, self.calls = ramp, 0
        self.mask_logits = nn.Parameter(mask)
        self.pattern_logits = nn.Parameter(pattern)
        self.register_buffer("images", images)
        self.register_buffer("lam", lam)
        self.order = order if order is not None else torch.arange(images.shape[0], device=images.device)
        self.per_step, self.steps = per_step or images.shape[0], 0

    def masks(self) -> torch.Tensor:
        """Each trigger's mask [K, 1, H, W] in [0, 1]."""
        size = tuple(self.images.shape[-2:])
        return torch.sigmoid(F.interpolate(self.mask_logits, size=size, mode="bilinear", align_corners=False))

    def patterns(self) -> torch.Tensor:
        """Each trigger's pattern [K, 3, H, W] in [0, 1]."""
        return torch.sigmoid(self.pattern_logits)

    def paste(self, images: torch.Tensor) -> torch.Tensor:
        """Every trigger pasted on every image of ``images`` [N, 3, H, W]: [K * N, 3, H, W], trigger-major."""
        m, p = self.masks()[:, None], self.patterns()[:, None]
        return ((1 - m) * images[None] + m * p).flatten(0, 1)

    def forward(self) -> torch.Tensor:
        n = self.images.shape[0]
        if self.per_step == n:
            return self.paste(self.images)
        if not torch.is_grad_enabled():
            return self.paste(self.images[: self.per_step])
        start = self.steps * self.per_step
        self.steps += 1
        return self.paste(self.images[self.order[(start + torch.arange(self.per_step, device=self.order.device)) % n]])

    def penalty(self) -> torch.Tensor:
        """Per pasted image its trigger's ``lam * mean(mask)`` [K * per_step]: the L1 norm as a share of the image;
        during the first ``ramp`` calls (one per render step) lam is scaled by the share of the ramp done."""
        self.calls += 1
        scale = min(1.0, self.calls / self.ramp) if self.ramp > 0 else 1.0
        share = self.masks().mean((1, 2, 3))
        return (scale * self.lam * share).repeat_interleave(self.per_step)
