"""Vision Transformers: token selectors, attention heads and patterns, ViT render defaults, DINOv2 loader.

- :mod:`~visfeat.vit.tokens`: :class:`TokenLayout` (class/register tokens + patch grid) and
  :class:`TokenSelector` (``cls``, ``mean``, ``patch=r,c``, ``reg=i``), used by unit strings such as
  ``blocks.6.mlp.act:123@cls``.
- :mod:`~visfeat.vit.objectives`: token-aware ``channel``, ``neuron``, ``direction``, ``diversity``,
  per-head ``head`` and attention-pattern ``attention`` objectives.
- :mod:`~visfeat.vit.defaults`: the random-crop defaults that ``render`` uses for token models.
- :mod:`~visfeat.vit.onnx_import`: ``load_model("dinov2_vits14_imgfocus")`` (needs ``visfeat[vit]``).
"""

from __future__ import annotations

from .defaults import DEFAULTS, ViTDefaults, is_token_model, vit_param, vit_transforms
from .objectives import attention, attention_map, channel, direction, diversity, head, neuron, selected
from .tokens import CLS, MEAN, TokenLayout, TokenSelector, infer_layout, parse_selector, patch, region, register
from .units import layer_layout, model_grid, validate_token_unit

__all__ = [
    "CLS",
    "DEFAULTS",
    "MEAN",
    "TokenLayout",
    "TokenSelector",
    "ViTDefaults",
    "attention",
    "attention_map",
    "channel",
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
    "validate_token_unit",
    "vit_param",
    "vit_transforms",
]
