"""BatchTopK SAE: keep the ``k * batch`` largest pre-activations of a whole batch (Bussmann et al., 2024).

Training picks latents across the batch, so a vector may use more or fewer than ``k``. At inference,
where there is no batch to compare with, a latent is active when its pre-activation exceeds a
threshold: a running mean of the smallest value kept in each training batch, recalibrated at the end
of training on a sample so that the sample gets ``k`` latents per vector on average.
"""

from __future__ import annotations

import torch

from .base import SAE, SAEConfig
from .registry import register_variant


@register_variant("batchtopk")
class BatchTopKSAE(SAE):
    """``k`` active latents per vector on average over a batch; a threshold at inference."""

    variant = "batchtopk"

    def __init__(self, config: SAEConfig):
        super().__init__(config)
        self.register_buffer("threshold", torch.tensor(-1.0))  # < 0: not estimated yet
        self.momentum = 0.01

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        if self.training or float(self.threshold) < 0:
            flat = pre.reshape(-1, pre.shape[-1]).clamp(min=0)
            n = min(self.config.k * flat.shape[0], flat.numel())
            vals, idx = flat.flatten().topk(n)
            z = torch.zeros_like(flat).flatten().scatter(0, idx, vals).view_as(flat)
            if self.training:
                with torch.no_grad():
                    kept = vals[vals > 0]
                    if kept.numel():
                        low = kept.min()
                        t = self.threshold
                        t.copy_(low if float(t) < 0 else (1 - self.momentum) * t + self.momentum * low)
            return z.view_as(pre)
        return pre * (pre > self.threshold)

    @torch.no_grad()
    def calibrate(self, sample: torch.Tensor) -> None:
        """Set the inference threshold so that ``sample`` gets ``k`` active latents per vector on average."""
        pre = self.pre_acts(sample).clamp(min=0).flatten()
        n = min(self.config.k * sample.shape[0], pre.numel())
        self.threshold.fill_(float(pre.topk(n).values[-1]))

    def extra_state(self) -> dict:
        return {"threshold": float(self.threshold)}
