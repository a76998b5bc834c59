"""ReLU SAE with an L1 penalty on the latents (Bricken et al., 2023); decoder rows stay at unit norm."""

from __future__ import annotations

import torch

from .base import SAE
from .registry import register_variant


@register_variant("relu")
class ReLUSAE(SAE):
    """``z = relu(pre)``; sparsity comes from ``l1_coeff * |z|_1 / d_in`` in the loss."""

    variant = "relu"

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return torch.relu(pre)

    def sparsity_loss(self, z: torch.Tensor) -> torch.Tensor:
        return self.config.l1_coeff * z.abs().sum(-1).mean() / self.config.d_in
