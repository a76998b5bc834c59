"""Quality measures for ViT visualizations: activations on real photos, held-out views, patch-grid artifacts."""

from __future__ import annotations

import torch

from .. import transforms as tf
from ..images import random_crops, sample_photos


@torch.no_grad()
def photo_activations(model, layer: str, channels: list[int], n_crops: int = 64, seed: int = 0, batch: int = 16):
    """Per channel, over ``n_crops`` random crops of the sample photos: the largest activation at any
    token, and the largest mean over patch tokens. Returns ``(token_max [C], patch_mean_max [C])``."""
    from .tokens import MEAN, as_tokens

    crops = random_crops(sample_photos().values(), n_crops, model.input_size[0], seed=seed)
    token_max = torch.full((len(channels),), -float("inf"))
    mean_max = token_max.clone()
    for i in range(0, n_crops, batch):
        act = model.activations(crops[i : i + batch].to(model.device), [layer])[layer]
        toks, lay = as_tokens(act, layer)
        toks = toks[..., channels].float().cpu()
        token_max = torch.maximum(token_max, toks.amax((0, 1)))
        mean_max = torch.maximum(mean_max, MEAN.select(toks, lay).mean(1).amax(0))
    return token_max, mean_max


def heldout_views(size: int | tuple[int, int]) -> tf.Transform:
    """Fresh random views for held-out scores: a crop of 60-100% of the side anywhere in the image,
    resized to ``size`` (no noise). The same for every setting compared."""
    return tf.compose(tf.crops_with_noise((0.6, 1.0), noise=0.0), tf.resize(size))


def patch_grid_score(images: torch.Tensor, patch: int) -> torch.Tensor:
    """How much of each image's spectrum sits on the patch-grid frequencies (multiples of 1/patch
    cycles per pixel, either axis), relative to the average over all frequencies: ~1 for no grid,
    larger when the patch grid is painted into the image. Returns ``[N]``."""
    x = images.float() - images.float().mean((-2, -1), keepdim=True)
    mag = torch.fft.rfft2(x.mean(1)).abs()  # [N, H, W//2+1]
    h, w = images.shape[-2:]
    fy = torch.fft.fftfreq(h).abs()[:, None] * patch
    fx = torch.fft.rfftfreq(w)[None, :] * patch
    on = lambda f: ((f - f.round()).abs() < 0.5 * patch / max(h, w)) & (f.round() >= 1)  # noqa: E731
    grid = on(fy) | on(fx)
    return mag[:, grid].mean(1) / mag.flatten(1).mean(1)
