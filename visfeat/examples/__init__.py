"""Dataset examples: for every unit of a layer (or every SAE latent), the images and patches that excite it most.

``collect`` (the streaming collector: ``dataset_examples_many`` over many targets in one pass,
``dataset_examples`` for one), ``result`` (``Examples`` and its files), ``geometry`` (receptive field,
patch boxes), ``topk`` (the streaming top-k state), ``concentration`` and ``montage`` (pictures).
"""

from __future__ import annotations

from .collect import Target, dataset_examples, dataset_examples_many, feature_id, unit_maps
from .geometry import patch_box, receptive_field
from .result import Examples
from .topk import TopK

__all__ = [
    "Examples",
    "Target",
    "TopK",
    "dataset_examples",
    "dataset_examples_many",
    "feature_id",
    "patch_box",
    "receptive_field",
    "unit_maps",
]
