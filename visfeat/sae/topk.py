"""TopK SAE: keep the ``k`` largest pre-activations of each vector (Gao et al., 2024)."""

from __future__ import annotations

import torch

from .base import SAE
from .registry import register_variant


@register_variant("topk")
class TopKSAE(SAE):
    """Exactly ``k`` active latents (at most; negative ones are zeroed) per vector."""

    variant = "topk"

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        vals, idx = pre.topk(self.config.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, idx, vals.clamp(min=0))
