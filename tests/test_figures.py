"""Docs figures: a labelled grid has one tile per image, and ``colors=`` makes a small palette PNG."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from visfeat.figures import labelled_grid


def test_labelled_grid_tiles_and_palette(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(5, 3, 20, 20, generator=g)
    full, small = tmp_path / "full.png", tmp_path / "small.png"
    labelled_grid(images, [f"unit {i}" for i in range(5)], full, cols=3, tile=40)
    labelled_grid(images, [f"unit {i}" for i in range(5)], small, cols=3, tile=40, colors=16)
    with Image.open(full) as a, Image.open(small) as b:
        assert a.size == b.size == (3 * 40, 2 * (40 + 16))  # 3 columns, 2 rows, one caption line each
        assert a.mode == "RGB" and b.mode == "P"
        assert len(b.getcolors()) <= 16 < len(a.getcolors(maxcolors=1 << 16))
        tile = np.asarray(a.crop((40, 0, 80, 40)), dtype=np.float32)
        assert tile.std() > 10  # the second image was pasted (noise), not left white
    assert small.stat().st_size < full.stat().st_size
