"""Render defaults for token models (ViTs): MACO-style random crops instead of Lucid's jitter set.

A ViT sees an image as a grid of patches; with the CNN defaults (pad, jitter of a few pixels, +-5% zoom)
the patch grid stays almost aligned with the image, and the optimization paints patch-sized texture
and border blocks. A random crop of 50-100% of the side, anywhere in the image, resized to the input,
moves the patch boundaries by a random sub-patch amount and changes the scale every step, so only
content that survives any patch alignment pays off. Measured on DINOv2 ViT-S/14 in ``docs/vit.md``.
:func:`visfeat.render.default_param` and :func:`~visfeat.render.default_transforms` call
:func:`vit_param` / :func:`vit_transforms` first; both return ``None`` for models without token layers.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import param as params
from .. import transforms as tf


@dataclass(frozen=True)
class ViTDefaults:
    """The settings :func:`vit_param` and :func:`vit_transforms` use."""

    size: int = 128  # side of the optimized image (Fourier, 1/f), upsampled to the model's input
    crop: tuple[float, float] = (0.5, 1.0)  # side of each random crop as a fraction of the image side
    noise: float = 0.02  # std of the Gaussian noise added to each crop


DEFAULTS = ViTDefaults()


def is_token_model(model) -> bool:
    """Whether ``model`` has token layers ``[B, T, D]`` (a ViT, DeiT, Swin, or your own ViT); a
    ``token_model`` attribute on the Model overrides the check."""
    flag = getattr(model, "token_model", None)
    if flag is not None:
        return bool(flag)
    return any(info.layout == "tokens" for info in model.layers.values())


def vit_param(model, settings: ViTDefaults = DEFAULTS) -> params.Param | None:
    """Fourier (1/f, decorrelated colour) at ``settings.size`` px (the model's size if smaller) for
    token models; None for others. ``visfeat.param.maco`` is the phase-only alternative."""
    if not is_token_model(model):
        return None
    side = min(settings.size, *(model.spec.size or (settings.size,)))
    return params.fourier(size=side)


def vit_transforms(model, settings: ViTDefaults = DEFAULTS) -> tf.Transform | None:
    """A random crop (side 50-100%, anywhere, with a little noise) resized to the model's input size,
    for token models; None for others."""
    if not is_token_model(model):
        return None
    return tf.compose(tf.crops_with_noise(settings.crop, settings.noise), tf.resize(model.input_size))
