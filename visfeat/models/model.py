"""Model: a frozen module in eval mode, its InputSpec and its layer catalogue."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import nn

from ..errors import UnknownLayerError, VisfeatError, unknown
from ..hooks import LOGITS, activations, capture, run
from ..vit.tokens import infer_layout, is_channels_last
from ..vit.units import model_grid
from .spec import InputSpec


@dataclass(frozen=True)
class LayerInfo:
    """One row of the layer catalogue."""

    name: str
    type: str
    shape: tuple[int, ...] | None  # output shape without batch, at the spec's input size
    layout: str = ""  # "CHW", "HWC" (channels last, e.g. Swin), "tokens", "vector", or "" when not a tensor
    tokens: str = ""  # for token layers, where the tokens come from, e.g. "cls + 4 reg + 16x16 patches"

    @property
    def channels(self) -> int | None:
        if not self.shape:
            return None
        return self.shape[-1] if self.layout in ("tokens", "HWC") else self.shape[0]

    @property
    def grid(self) -> tuple[int, int] | None:
        """``(H, W)`` of a per-position layer (CHW or HWC); None for tokens, vectors and non-tensors."""
        if self.layout == "CHW":
            return self.shape[1], self.shape[2]
        if self.layout == "HWC":
            return self.shape[0], self.shape[1]
        return None


@dataclass
class Model:
    """A vision model ready for interpretability: frozen, in eval mode, with its preprocessing."""

    module: nn.Module
    spec: InputSpec = field(default_factory=InputSpec)
    name: str = "custom"
    logits_layer: str = ""  # submodule whose output is the class logits ("" = the model's output)
    labels: tuple[str, ...] | None = None  # class names, index-aligned with the logits

    def __post_init__(self) -> None:
        if not isinstance(self.module, nn.Module):
            raise TypeError(f"Model needs an nn.Module, got {type(self.module).__name__}")
        self.module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        _no_inplace(self.module)

    @property
    def input_size(self) -> tuple[int, int]:
        """``(H, W)`` of the images the model takes: the spec's size, or (224, 224) for a model of any size."""
        size = self.spec.size or (224, 224)
        return int(size[0]), int(size[1])

    @property
    def device(self) -> torch.device:
        for p in self.module.parameters():
            return p.device
        return torch.device("cpu")

    def to(self, device: str | torch.device) -> Model:
        self.module.to(device)
        return self

    def channels_last(self) -> Model:
        """On CUDA, store the 4-D (convolution) weights channels-last, the layout cuDNN runs fastest with the
        channels-last inputs ``render`` feeds there; on any other device nothing changes (CPU results stay
        bit-identical). Returns the model."""
        if self.device.type == "cuda":
            self.module.to(memory_format=torch.channels_last)
        return self

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return self.spec.preprocess(images)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """The model's output for a [0, 1] image batch."""
        return self.module(self.preprocess(images))

    @cached_property
    def layers(self) -> dict[str, LayerInfo]:
        """Every named submodule with its output shape at the spec's input size (one dry forward)."""
        names = [n for n, _ in self.module.named_modules() if n]
        x = torch.rand(1, 3, *self.input_size, device=self.device)
        with (
            torch.no_grad(),
            capture(self.module, names + [LOGITS], stop_early=False, logits=self.logits_layer) as acts,
        ):
            run(self.module, self.preprocess(x))
        mods = dict(self.module.named_modules())
        out = {}
        for n in names + [LOGITS]:
            act = acts.get(n)
            if isinstance(act, (tuple, list)) and act and torch.is_tensor(act[0]):
                act = act[0]
            shape = tuple(act.shape[1:]) if torch.is_tensor(act) else None
            layout = {3: "CHW", 2: "tokens", 1: "vector"}.get(len(shape), "") if shape is not None else ""
            typ = type(mods[n]).__name__ if n != LOGITS else "output"
            out[n] = LayerInfo(n, typ, shape, *_token_layout(self, mods, n, act, layout))
        return out

    def layer(self, name: str) -> LayerInfo:
        """Catalogue entry of one layer; unknown names list the closest ones."""
        if name not in self.layers:
            raise UnknownLayerError(unknown("layer", name, self.layers))
        return self.layers[name]

    def activations(self, images: torch.Tensor, layers: list[str], stop_early: bool = True) -> dict:
        """Outputs of ``layers`` for a [0, 1] image batch (no gradient bookkeeping is changed)."""
        return activations(self.module, self.preprocess(images), layers, stop_early, self.logits_layer)

    def describe(self) -> str:
        """The layer catalogue as a table."""
        rows = [
            f"{self.name}: input {self.spec.size}, range {self.spec.value_range}, "
            f"mean {self.spec.mean}, std {self.spec.std}"
        ]
        width = max(len(n) for n in self.layers)
        for info in self.layers.values():
            shape = "x".join(map(str, info.shape)) if info.shape else "-"
            tokens = f" ({info.tokens})" if info.tokens else ""
            rows.append(f"{info.name:<{width}}  {info.type:<24} {shape:<16} {info.layout}{tokens}")
        return "\n".join(rows)


def _no_inplace(module: nn.Module) -> None:
    """Turn off in-place activations (``nn.ReLU(inplace=True)``...): they overwrite the output of the layer
    before them, so a captured pre-activation (``visfeat.preact``) would read the activation instead."""
    for m in module.modules():
        if getattr(m, "inplace", None) is True:
            m.inplace = False


def _token_layout(model: Model, mods: dict, name: str, act, layout: str) -> tuple[str, str]:
    """Refine the catalogue layout: per-head queries/keys, channels-last spatial maps (Swin), and where a
    token layer's tokens come from."""
    parent = mods.get(name.rpartition(".")[0])
    if layout == "CHW" and name.endswith(("q_norm", "k_norm")) and act.shape[1] == getattr(parent, "num_heads", -1):
        return "heads", ""
    square = model.spec.size is None or model.spec.size[0] == model.spec.size[1]
    if layout == "CHW" and square and is_channels_last(act):
        return "HWC", ""
    if layout != "tokens":
        return layout, ""
    try:
        return layout, str(infer_layout(act.shape[1], model_grid(model)))
    except VisfeatError:
        return layout, ""


def channel_sums(act: torch.Tensor, layout: str) -> torch.Tensor:
    """``[B, C]``: a per-position tensor summed over its positions (CHW, HWC, tokens) or a vector as it is."""
    if layout == "CHW":
        return act.sum((2, 3))
    if layout == "HWC":
        return act.sum((1, 2))
    if layout == "tokens":
        return act.sum(1)
    return act.reshape(act.shape[0], -1)
