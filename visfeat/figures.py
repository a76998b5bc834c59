"""Picture grids with captions (PIL only), for docs and reports."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from .images import atomic_write, to_uint8


def labelled_grid(
    images: torch.Tensor,
    labels: Sequence[str],
    path: str | Path,
    cols: int = 8,
    tile: int = 160,
    colors: int | None = None,
) -> None:
    """Save images [N, 3, H, W] in [0, 1] as a grid of ``tile``-px tiles with a caption under each
    (as a ``colors``-colour palette PNG when given, for small docs figures)."""
    import io

    from PIL import Image, ImageDraw

    n = images.shape[0]
    rows = (n + cols - 1) // cols
    lines = max(str(lab).count("\n") + 1 for lab in labels) if labels else 0
    cap = 4 + 12 * lines
    sheet = Image.new("RGB", (cols * tile, rows * (tile + cap)), "white")
    draw = ImageDraw.Draw(sheet)
    for i in range(n):
        r, c = divmod(i, cols)
        im = Image.fromarray(to_uint8(images[i])).resize((tile, tile), Image.BILINEAR)
        sheet.paste(im, (c * tile, r * (tile + cap)))
        if i < len(labels):
            draw.multiline_text((c * tile + 3, r * (tile + cap) + tile + 2), str(labels[i]), fill="black", spacing=1)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=True)
    atomic_write(path, compact_png(buf.getvalue(), colors) if colors else buf.getvalue())


def compact_png(data: bytes, colors: int = 256) -> bytes:
    """Re-encode PNG bytes as a ``colors``-colour palette PNG, so docs figures stay small (a few 100 KB)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        small = im.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    return out.getvalue()
