"""``"auto"`` render settings resolved for the device a build runs on: bf16 autocast and a batch of units that
fits the GPU's free memory on CUDA; elsewhere no autocast and :data:`CPU_BATCH` units (the batch every CPU gallery
was keyed with before "auto" existed), so keys, and with them stored results, stay the same."""

from __future__ import annotations

from dataclasses import replace

import torch

from .spec import RenderSettings

CPU_BATCH = 32
#: The largest batch "auto" picks on CUDA, and the share of free memory it may fill.
MAX_BATCH, MEMORY_SHARE = 512, 0.8


def fit_batch(free: float, per_image: float, fixed: float, images_per_unit: int, cap: int = MAX_BATCH) -> int:
    """The largest power-of-two batch of units (at most ``cap``) whose renders fit in ``MEMORY_SHARE`` of
    ``free`` bytes, given each image's bytes (all its views) and the bytes that do not grow with the batch.
    A power of two (a multiple of 8 from 8 up), so a little more or less free memory rarely changes the
    batch, and with it the keys of every render job."""
    room = MEMORY_SHARE * free - fixed
    units = int(room // (max(per_image, 1.0) * max(images_per_unit, 1))) if room > 0 else 0
    return 1 << (min(max(units, 1), cap).bit_length() - 1)


def auto_batch_size(model, settings: RenderSettings, unit: str, probe: int = 8) -> int:
    """The batch of units for ``batch_size = "auto"`` on CUDA: the peak memory of one render step of ``unit``
    at ``probe // 2`` and ``probe`` images (times ``views``) gives the bytes per image and the fixed bytes; the
    batch is the largest that fits, counting the diverse render's ``max(2, diverse)`` images per unit."""
    from ..render import default_param, render

    dev = model.device
    peaks = []
    for n in (probe // 2, probe):
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        try:
            render(
                model,
                [unit] * n,
                param=default_param(model),
                steps=1,
                views=settings.views,
                amp=settings.amp,
                preact=settings.preact,
                progress=False,
            )
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            return 1
        torch.cuda.synchronize(dev)
        peaks.append(torch.cuda.max_memory_allocated(dev) - base)
    torch.cuda.empty_cache()  # cached blocks count as used in mem_get_info
    per_image = max(peaks[1] - peaks[0], 1) / (probe - probe // 2)  # one image of a unit, all its views
    fixed = max(0.0, peaks[1] - per_image * probe)
    free, _ = torch.cuda.mem_get_info(dev)
    return fit_batch(free, per_image, fixed, max(1, settings.diverse_images))


def resolve_settings(model, settings: RenderSettings, unit: str | None = None) -> RenderSettings:
    """``settings`` with ``"auto"`` resolved for the model's device, so recipes and keys hold what runs:
    amp is bf16 on CUDA (where supported), else None; batch_size is :func:`auto_batch_size` of ``unit`` on
    CUDA, else (or without a unit) ``CPU_BATCH``."""
    cuda = model.device.type == "cuda"
    if settings.amp == "auto":
        settings = replace(settings, amp="bf16" if cuda and torch.cuda.is_bf16_supported() else None)
    if settings.batch_size == "auto":
        size = auto_batch_size(model, settings, unit) if cuda and unit else CPU_BATCH
        settings = replace(settings, batch_size=size)
    return settings
