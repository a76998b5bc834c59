"""Recompute the MACO magnitude spectrum that ships in visfeat/param/spectrum_default.npy.

    python benchmarks/make_spectrum.py

It averages the magnitude spectra of the sample photos that scikit-image, scikit-learn and
matplotlib ship (plus random crops of them at several scales), at 224 px.
"""

from pathlib import Path

import numpy as np

from visfeat.images import random_crops, sample_photos
from visfeat.param import spectrum_from_images

photos = list(sample_photos().values())
crops = random_crops(photos, n=200, size=224, scales=(0.3, 1.0), seed=0)
mag = spectrum_from_images([*photos, crops], size=224)
out = Path(__file__).resolve().parents[1] / "visfeat" / "param" / "spectrum_default.npy"
np.save(out, mag.numpy().astype(np.float16))
print(f"wrote {out} {tuple(mag.shape)} from {len(photos)} photos + {crops.shape[0]} crops")
