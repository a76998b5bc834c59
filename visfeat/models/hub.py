"""Models from timm, torchvision and lucent's zoo (Lucid's InceptionV1)."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from ..errors import OfflineError, VisfeatError
from .download import fetch
from .model import Model
from .registry import register_model
from .spec import InputSpec

#: Lucid's InceptionV1 (inception5h), as converted for lucent's model zoo.
INCEPTIONV1_URL = "https://github.com/ProGamerGov/pytorch-old-tensorflow-models/raw/master/inception5h.pth"


def load_timm(name: str, pretrained: bool = True, **kwargs) -> Model:
    """``timm.create_model(name)``; the InputSpec comes from the model's pretrained config."""
    import timm

    if not timm.is_model(name):
        from ..errors import unknown

        raise VisfeatError(unknown("timm model", name, timm.list_models()))
    try:
        module = timm.create_model(name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError) as e:
        if not pretrained:
            raise
        raise OfflineError(
            f"timm could not fetch pretrained weights for {name!r} ({e}); use pretrained=False "
            "(--no-pretrained) or set timm's pretrained_cfg_overlay=dict(file='path/to/weights')"
        ) from e
    cfg = module.pretrained_cfg
    _, h, w = cfg.get("input_size", (3, 224, 224))
    spec = InputSpec(
        size=(h, w),
        fixed_size=bool(cfg.get("fixed_input_size", False)),
        mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
    )
    labels = None
    if getattr(module, "num_classes", 0) == 1000:
        from ..imagenet import imagenet_labels

        labels = imagenet_labels()
    return Model(module, spec, name=f"timm:{name}", labels=labels)


def load_torchvision(name: str, pretrained: bool = True, **kwargs) -> Model:
    """``torchvision.models.get_model(name)`` with its default weights when ``pretrained``."""
    import torchvision

    if name not in torchvision.models.list_models():
        from ..errors import unknown

        raise VisfeatError(unknown("torchvision model", name, torchvision.models.list_models()))
    weights = torchvision.models.get_model_weights(name).DEFAULT if pretrained else None
    try:
        module = torchvision.models.get_model(name, weights=weights, **kwargs)
    except (OSError, RuntimeError) as e:
        raise OfflineError(
            f"torchvision could not fetch weights for {name!r} ({e}); use pretrained=False "
            "(--no-pretrained), or build the model yourself and pass it with an InputSpec"
        ) from e
    labels = tuple(weights.meta["categories"]) if weights is not None else None
    return Model(module, InputSpec.imagenet(224), name=f"torchvision:{name}", labels=labels)


@register_model("inceptionv1")
def load_inceptionv1(pretrained: bool = True, weights: str | Path | None = None, url: str = INCEPTIONV1_URL) -> Model:
    """Lucid's InceptionV1 with Lucid layer names (``mixed4b``, ``mixed4c``...) from lucent's zoo.

    Weights download from ``url`` (cached); offline, pass ``weights='inception5h.pth'``.
    Inputs are mapped as Lucid does: ``x * 255 - 117``. Logits: ``softmax2_pre_activation_matmul``.
    """
    try:
        from lucent.modelzoo.inceptionv1.InceptionV1 import InceptionV1
    except ImportError as e:
        raise VisfeatError("InceptionV1 needs lucent: pip install torch-lucent (or visfeat[dev])") from e
    module = InceptionV1(pretrained=False)
    if pretrained or weights is not None:
        path = Path(weights) if weights is not None else fetch(url, "inception5h.pth")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            module.load_state_dict(state)
        except (OSError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError) as e:
            raise VisfeatError(f"could not load InceptionV1 weights from {path}: {e}") from e
    spec = InputSpec(size=(224, 224), value_range=(-117.0, 138.0))
    return Model(module, spec, name="inceptionv1", logits_layer="softmax2_pre_activation_matmul")
