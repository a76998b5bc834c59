"""Pictures for pages: tensors and PIL images as PNG/WebP bytes or data URIs, weight kernels as red/blue heatmaps,
activation maps as translucent overlays."""

from __future__ import annotations

import base64
import io

import torch

from ..images import to_uint8

HEAT = 28  # largest heatmap side (positions) drawn over an example


def image_bytes(
    image: torch.Tensor | object, size: int | None = None, fmt: str = "PNG", nearest: bool = False
) -> bytes:
    """Encode a [3, H, W] tensor in [0, 1] (or a PIL image) as PNG or WebP, optionally resized to ``size`` wide."""
    from PIL import Image

    im = Image.fromarray(to_uint8(image)) if torch.is_tensor(image) else image
    if size and im.width != size:
        im = im.resize((size, max(1, round(im.height * size / im.width))), Image.NEAREST if nearest else Image.LANCZOS)
    buf = io.BytesIO()
    if fmt == "WEBP":
        im.save(buf, format="WEBP", quality=85, method=4)
    else:
        im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    """A PNG inlined in a page (small pictures: kernels, heatmaps)."""
    return "data:image/png;base64," + base64.b64encode(png).decode()


def kernel_heatmap(kernel: torch.Tensor, scale: float, width: int):
    """A weight kernel ``[kh, kw]`` as a PIL image ``width`` px wide (nearest): red excites, blue inhibits, white is
    zero, ``scale`` = full colour. The one kernel picture of gallery pages and circuit figures."""
    from PIL import Image

    t = (kernel.float() / scale).clamp(-1, 1) if scale > 0 else torch.zeros_like(kernel.float())
    pos, neg = t.clamp_min(0), (-t).clamp_min(0)
    rgb = torch.stack([1 - neg, 1 - pos - neg, 1 - pos]).clamp(0, 1)
    kh, kw = kernel.shape
    return Image.fromarray(to_uint8(rgb)).resize((width, width * kh // max(1, kw)), Image.NEAREST)


def kernel_image(kernel: torch.Tensor, scale: float, width: int = 48) -> str:
    """A weight kernel as a small PNG data URI, whole pixels per tap (about ``width`` px wide)."""
    kw = kernel.shape[1]
    return data_uri(image_bytes(kernel_heatmap(kernel, scale, kw * max(1, width // kw))))


def heat_image(heat: torch.Tensor, vmax: float) -> str:
    """An activation map as a translucent PNG data URI laid over its image: dark where the unit is silent, clear
    where it fires most (the image shows through where the unit looks)."""
    from PIL import Image

    heat = heat.float()
    if max(heat.shape) > HEAT:  # a 112x112 map shows no more than a 28x28 one at 112 px, and costs 16x the bytes
        heat = torch.nn.functional.adaptive_avg_pool2d(heat[None, None], HEAT)[0, 0]
    t = (heat / vmax).clamp(0, 1) if vmax > 0 else torch.zeros_like(heat)
    z = torch.zeros_like(t)
    rgba = torch.stack([z, z, z + 0.05, 0.72 * (1 - t)])
    arr = (rgba.permute(1, 2, 0) * 255).round().byte().numpy()
    return data_uri(image_bytes(Image.fromarray(arr, "RGBA")))
