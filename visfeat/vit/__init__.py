"""Vision Transformers: token selectors, attention heads and patterns, ViT render defaults, quality.

- :mod:`~visfeat.vit.tokens`: :class:`TokenLayout` (class/register tokens + patch grid) and
  :class:`TokenSelector` (``cls``, ``mean``, ``patch=r,c``, ``reg=i``), used by unit strings such as
  ``blocks.6.mlp.act:123@cls``.
- :mod:`~visfeat.vit.objectives`: token-aware ``channel``, ``neuron``, ``direction``, ``diversity``,
  per-head ``head`` and attention-pattern ``attention`` objectives.
- :mod:`~visfeat.vit.defaults`: the random-crop defaults that ``render`` uses for token models.
- :mod:`~visfeat.vit.units`: ViT units from parsed parts (layer, head, dim, selector), the patch grid.
- :mod:`~visfeat.vit.quality`: held-out views and the patch-grid score of a rendered picture.

The DINOv2 ViT-S/14 loader lives with the other loaders: :mod:`visfeat.models.dinov2`.
"""

from __future__ import annotations

from .defaults import DEFAULTS, ViTDefaults, is_token_model, vit_param, vit_transforms
from .objectives import attention, attention_map, channel, direction, diversity, head, neuron, selected
from .tokens import CLS, MEAN, TokenLayout, TokenSelector, infer_layout, parse_selector, patch, region, register
from .units import attention_module, check_token_unit, layer_layout, model_grid, token_objective

__all__ = [
    "CLS",
    "DEFAULTS",
    "MEAN",
    "TokenLayout",
    "TokenSelector",
    "ViTDefaults",
    "attention",
    "attention_map",
    "attention_module",
    "channel",
    "check_token_unit",
    "direction",
    "diversity",
    "head",
    "infer_layout",
    "is_token_model",
    "layer_layout",
    "model_grid",
    "neuron",
    "parse_selector",
    "patch",
    "region",
    "register",
    "selected",
    "token_objective",
    "vit_param",
    "vit_transforms",
]
