"""NMF of a unit's weights over its input channels: three spatial factors shown as one RGB image.

The kernel ``[in, kh, kw]`` is split into its positive and negative parts (so that inhibition is a
factor too) and factored as ``X[positions, 2 * in] ~ A[positions, 3] @ B[3, 2 * in]`` by
multiplicative updates; ``A`` reshaped to ``[3, kh, kw]`` is the RGB picture, ``B`` says which
input channels make each colour.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class WeightNMF:
    """Spatial factors ``[3, kh, kw]``, channel loadings ``[3, 2 * in]`` (positive parts, then negative) and fit."""

    spatial: torch.Tensor
    channels: torch.Tensor
    relative_error: float

    def rgb(self) -> torch.Tensor:
        """The spatial factors as an RGB image ``[3, kh, kw]`` in [0, 1], each factor scaled to its maximum."""
        peak = self.spatial.flatten(1).amax(1).clamp_min(1e-12)
        return (self.spatial / peak.view(-1, 1, 1)).clamp(0, 1)

    def top_channels(self, factor: int, k: int = 5) -> list[tuple[int, str, float]]:
        """The input channels that load most on one factor: ``(channel, "+"/"-", loading)``."""
        n = self.channels.shape[1] // 2
        vals, idx = self.channels[factor].topk(min(k, self.channels.shape[1]))
        return [(int(i) % n, "+" if i < n else "-", float(v)) for v, i in zip(vals, idx, strict=True)]


def nmf(x: torch.Tensor, rank: int = 3, iters: int = 500, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative ``x [m, n] ~ a [m, rank] @ b [rank, n]`` (Lee-Seung multiplicative updates, Frobenius loss)."""
    if (x < 0).any():
        raise ValueError("nmf needs a non-negative matrix")
    g = torch.Generator().manual_seed(seed)
    x = x.double()
    scale = x.mean().clamp_min(1e-12).sqrt()
    a = torch.rand(x.shape[0], rank, generator=g, dtype=torch.float64) * scale
    b = torch.rand(rank, x.shape[1], generator=g, dtype=torch.float64) * scale
    eps = 1e-12
    for _ in range(iters):
        b = b * (a.T @ x) / (a.T @ a @ b + eps)
        a = a * (x @ b.T) / (a @ b @ b.T + eps)
    return a.float(), b.float()


def weight_nmf(weights: torch.Tensor, rank: int = 3, iters: int = 500, seed: int = 0) -> WeightNMF:
    """NMF of one unit's expanded weights ``[in, kh, kw]`` into ``rank`` spatial factors."""
    w = weights.detach().float().cpu()
    cin, kh, kw = w.shape
    x = torch.cat([w.clamp_min(0), (-w).clamp_min(0)]).reshape(2 * cin, kh * kw).T  # [positions, 2 * in]
    a, b = nmf(x, rank, iters, seed)
    err = float((x - a @ b).norm() / x.norm().clamp_min(1e-12))
    return WeightNMF(a.T.reshape(rank, kh, kw), b, err)
