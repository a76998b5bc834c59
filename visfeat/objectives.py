"""Objectives: differentiable scores of captured activations, one score per image (maximized).

An :class:`Objective` knows which layers it reads and maps ``{layer: activation}`` to a ``[B]``
tensor. Objectives compose with ``+ - * /``, negation and ``sum``. ``batch=i`` restricts an
objective to image ``i``; :func:`per_image` turns a list of N objectives into one objective over a
batch of N images (image i maximizes objective i), which is how many units render in one run.

Layer activations may be ``[B, C, H, W]`` (conv), ``[B, T, D]`` (tokens; the mean over tokens is
used unless a :class:`~visfeat.vit.tokens.TokenSelector` narrows it) or ``[B, C]`` (logits, pooled).
The pseudo layer ``"input"`` is the image batch in [0, 1] before transforms (for penalties),
``"logits"`` the model's output.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import UnitError
from .hooks import LOGITS

#: Pseudo layer holding the image batch in [0, 1] as the parameterization produced it.
INPUT = "input"

Acts = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Objective:
    """A named score ``fn(acts) -> [B]`` over the activations of ``layers``."""

    fn: Callable[[Acts], torch.Tensor]
    layers: frozenset[str]
    name: str

    def __call__(self, acts: Acts) -> torch.Tensor:
        return self.fn(acts)

    def __repr__(self) -> str:
        return f"Objective({self.name})"

    def _combine(self, other, op, sym: str, reverse: bool = False) -> Objective:
        if isinstance(other, Objective):
            a, b = (other, self) if reverse else (self, other)
            return Objective(lambda acts: op(a(acts), b(acts)), a.layers | b.layers, f"({a.name} {sym} {b.name})")
        if isinstance(other, (int, float)):
            c = float(other)
            if reverse:
                return Objective(lambda acts: op(c, self(acts)), self.layers, f"({c:g} {sym} {self.name})")
            return Objective(lambda acts: op(self(acts), c), self.layers, f"({self.name} {sym} {c:g})")
        return NotImplemented

    def __add__(self, other):
        return self._combine(other, operator.add, "+")

    def __radd__(self, other):
        if isinstance(other, (int, float)) and other == 0:  # sum([...]) starts from 0
            return self
        return self._combine(other, operator.add, "+", reverse=True)

    def __sub__(self, other):
        return self._combine(other, operator.sub, "-")

    def __rsub__(self, other):
        return self._combine(other, operator.sub, "-", reverse=True)

    def __mul__(self, other):
        return self._combine(other, operator.mul, "*")

    def __rmul__(self, other):
        return self._combine(other, operator.mul, "*", reverse=True)

    def __truediv__(self, other):
        return self._combine(other, operator.truediv, "/")

    def __rtruediv__(self, other):
        return self._combine(other, operator.truediv, "/", reverse=True)

    def __neg__(self) -> Objective:
        return Objective(lambda acts: -self(acts), self.layers, f"-{self.name}")


def restrict_to_image(fn: Callable[[Acts], torch.Tensor], batch: int | None) -> Callable[[Acts], torch.Tensor]:
    """Restrict a per-image score to image ``batch`` (zero elsewhere)."""
    if batch is None:
        return fn

    def restricted(acts: Acts) -> torch.Tensor:
        scores = fn(acts)
        if batch >= scores.shape[0]:
            raise UnitError(f"batch={batch} but the batch has {scores.shape[0]} images (0..{scores.shape[0] - 1})")
        mask = torch.zeros_like(scores)
        mask[batch] = 1
        return scores * mask

    return restricted


def batch_suffix(batch: int | None) -> str:
    """The ``[batch=i]`` suffix of an objective's name restricted to image ``i`` ("" for the whole batch)."""
    return "" if batch is None else f"[batch={batch}]"


def layer_act(acts: Acts, layer: str) -> torch.Tensor:
    """``layer``'s captured output as one tensor (the first element of a tuple output)."""
    act = acts[layer]
    if isinstance(act, (tuple, list)):
        act = act[0]
    return act


def _check_channel(act: torch.Tensor, layer: str, channel: int) -> None:
    n = act.shape[-1] if act.dim() == 3 else act.shape[1]
    if not 0 <= channel < n:
        raise UnitError(f"channel {channel} is out of range for layer {layer!r}, which has {n} channels (0..{n - 1})")


def channel_map(act: torch.Tensor, layer: str, channel: int) -> torch.Tensor:
    """One channel's activation per image and position: ``[B, H, W]``, ``[B, T]`` or ``[B, 1]``."""
    _check_channel(act, layer, channel)
    if act.dim() == 4:
        return act[:, channel]
    if act.dim() == 3:
        return act[:, :, channel]
    if act.dim() == 2:
        return act[:, channel : channel + 1]
    raise UnitError(f"layer {layer!r} has output shape {tuple(act.shape)}; expected 2, 3 or 4 dimensions")


def channel(layer: str, channel: int, batch: int | None = None) -> Objective:
    """Mean activation of one channel over all positions (tokens for a ViT layer)."""

    def fn(acts: Acts) -> torch.Tensor:
        m = channel_map(layer_act(acts, layer), layer, channel)
        return m.flatten(1).mean(1)

    return Objective(
        restrict_to_image(fn, batch), frozenset([layer]), f"channel({layer}:{channel}){batch_suffix(batch)}"
    )


def neuron(layer: str, channel: int, y: int | None = None, x: int | None = None, batch: int | None = None) -> Objective:
    """Activation of one channel at one spatial position (the centre unless ``y, x`` are given)."""

    def fn(acts: Acts) -> torch.Tensor:
        act = layer_act(acts, layer)
        if act.dim() != 4:
            raise UnitError(
                f"neuron() needs a spatial [B, C, H, W] layer; {layer!r} has shape {tuple(act.shape)}. "
                "Use channel() or a token selector for token layers"
            )
        m = channel_map(act, layer, channel)
        h, w = m.shape[-2:]
        yy = h // 2 if y is None else y
        xx = w // 2 if x is None else x
        if not (0 <= yy < h and 0 <= xx < w):
            raise UnitError(f"position ({yy}, {xx}) is outside layer {layer!r}'s {h}x{w} grid (0..{h - 1}, 0..{w - 1})")
        return m[:, yy, xx]

    pos = "" if y is None and x is None else f"@{y},{x}"
    return Objective(
        restrict_to_image(fn, batch), frozenset([layer]), f"neuron({layer}:{channel}{pos}){batch_suffix(batch)}"
    )


def layer(name: str, batch: int | None = None) -> Objective:
    """Mean squared activation of a whole layer ("deep dream")."""

    def fn(acts: Acts) -> torch.Tensor:
        return layer_act(acts, name).pow(2).flatten(1).mean(1)

    return Objective(restrict_to_image(fn, batch), frozenset([name]), f"layer({name}){batch_suffix(batch)}")


def _per_position(act: torch.Tensor) -> torch.Tensor:
    """Activation vectors per position: ``[B, P, C]``."""
    if act.dim() == 4:
        return act.flatten(2).transpose(1, 2)
    if act.dim() == 3:
        return act
    return act[:, None, :]


def projection(v: torch.Tensor, vec: torch.Tensor, cossim_pow: float, layer: str) -> torch.Tensor:
    """Mean over positions of ``v [B, P, C]`` projected on ``vec [C]``, times ``cos^cossim_pow`` (clamped at 0.1)."""
    if v.shape[-1] != vec.numel():
        raise UnitError(f"direction has {vec.numel()} dims but layer {layer!r} has {v.shape[-1]} channels")
    d = vec.to(v.device, v.dtype)
    dot = v @ d
    if cossim_pow:
        cos = dot / (v.norm(dim=-1) * d.norm() + 1e-8)
        dot = dot * cos.clamp(min=0.1) ** cossim_pow
    return dot.mean(1)


def direction(
    layer: str, vector: torch.Tensor | Sequence[float], cossim_pow: float = 0.0, batch: int | None = None
) -> Objective:
    """Mean projection of the activation vectors onto ``vector``.

    With ``cossim_pow > 0`` the projection is multiplied by ``cos^cossim_pow`` (cosine clamped at
    0.1), which favours activations pointing along the direction over merely large ones.
    """
    vec = torch.as_tensor(vector, dtype=torch.float32).flatten()

    def fn(acts: Acts) -> torch.Tensor:
        return projection(_per_position(layer_act(acts, layer)), vec, cossim_pow, layer)

    extra = f", cossim_pow={cossim_pow:g}" if cossim_pow else ""
    return Objective(
        restrict_to_image(fn, batch), frozenset([layer]), f"direction({layer}{extra}){batch_suffix(batch)}"
    )


def class_logit(cls: int | str, batch: int | None = None, layer: str = LOGITS) -> Objective:
    """The pre-softmax logit of a class, given by index or by ImageNet class name."""
    if isinstance(cls, str):
        from .imagenet import class_index

        index = class_index(cls)
    else:
        index = int(cls)

    def fn(acts: Acts) -> torch.Tensor:
        act = layer_act(acts, layer)
        if act.dim() != 2:
            raise UnitError(f"class_logit needs [B, classes] logits; {layer!r} has shape {tuple(act.shape)}")
        if not 0 <= index < act.shape[1]:
            raise UnitError(
                f"class {index} is out of range: the model has {act.shape[1]} classes (0..{act.shape[1] - 1})"
            )
        return act[:, index]

    label = cls if isinstance(cls, str) else index
    return Objective(restrict_to_image(fn, batch), frozenset([layer]), f"class_logit({label}){batch_suffix(batch)}")


def diversity(layer: str, group: int | None = None) -> Objective:
    """Negative cosine similarity of each image's Gram matrix to the others' (push a batch apart).

    ``group=G``: the batch is consecutive groups of G images (say G pictures of each of several units),
    and each image is pushed apart from the others of its own group only."""

    def fn(acts: Acts) -> torch.Tensor:
        v = _per_position(layer_act(acts, layer))  # [B, P, C]
        b = v.shape[0]
        g = b if group is None else group
        if b % g:
            raise UnitError(f"diversity(group={g}) needs a batch that is a multiple of {g}, got {b} images")
        if g < 2:
            return v.new_zeros(b)
        gram = F.normalize((v.transpose(1, 2) @ v).flatten(1), dim=1).view(b // g, g, -1)
        sim = gram @ gram.transpose(1, 2)  # [groups, G, G]
        off = sim.sum(2) - sim.diagonal(dim1=1, dim2=2)
        return (-off / (g - 1)).flatten()

    suffix = "" if group is None else f", group={group}"
    return Objective(fn, frozenset([layer]), f"diversity({layer}{suffix})")


def l1(layer: str = INPUT, constant: float = 0.0, batch: int | None = None) -> Objective:
    """Mean absolute deviation from ``constant`` (a penalty: subtract it)."""

    def fn(acts: Acts) -> torch.Tensor:
        return (layer_act(acts, layer) - constant).abs().flatten(1).mean(1)

    return Objective(restrict_to_image(fn, batch), frozenset([layer]), f"l1({layer}){batch_suffix(batch)}")


def l2(layer: str = INPUT, constant: float = 0.0, batch: int | None = None) -> Objective:
    """Root mean squared deviation from ``constant`` (a penalty: subtract it)."""

    def fn(acts: Acts) -> torch.Tensor:
        return ((layer_act(acts, layer) - constant).pow(2).flatten(1).mean(1) + 1e-12).sqrt()

    return Objective(restrict_to_image(fn, batch), frozenset([layer]), f"l2({layer}){batch_suffix(batch)}")


def total_variation(layer: str = INPUT, batch: int | None = None) -> Objective:
    """Mean absolute difference of neighbouring pixels (a penalty against high-frequency noise)."""

    def fn(acts: Acts) -> torch.Tensor:
        x = layer_act(acts, layer)
        dy = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
        dx = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
        return dx + dy

    return Objective(restrict_to_image(fn, batch), frozenset([layer]), f"total_variation({layer}){batch_suffix(batch)}")


def closeness(target: torch.Tensor, weight: float = 1.0, layer: str = INPUT) -> Objective:
    """``-weight`` times each image's mean squared distance to its ``target`` (the seed photos on ``"input"``, the
    untransformed image; or their activations of ``layer``): keeps an optimized image near where it started."""
    ref = torch.as_tensor(target).detach()

    def fn(acts: Acts) -> torch.Tensor:
        act = layer_act(acts, layer)
        if act.shape[1:] != ref.shape[1:] or ref.shape[0] not in (1, act.shape[0]):
            raise UnitError(
                f"closeness(): the target has shape {tuple(ref.shape)} but {layer!r} gives {tuple(act.shape)}; "
                "give one target per image, shaped like the layer's output"
            )
        return -weight * (act - ref.to(act.device, act.dtype)).pow(2).flatten(1).mean(1)

    return Objective(fn, frozenset([layer]), f"closeness({layer}, {weight:g})")


def per_image(objectives: Sequence[Objective]) -> Objective:
    """One objective over a batch of ``len(objectives)`` images: image i scores objective i."""
    objectives = list(objectives)
    if not objectives:
        raise UnitError("per_image() needs at least one objective")
    layers = frozenset().union(*(o.layers for o in objectives))

    def fn(acts: Acts) -> torch.Tensor:
        n = len(objectives)
        sizes = {k: v.shape[0] for k, v in acts.items() if torch.is_tensor(v)}
        if any(s != n for s in sizes.values()):
            raise UnitError(f"per_image() over {n} objectives needs a batch of {n} images, got {sizes}")
        # split() once: its N views share one backward node, where N separate slices would each scatter
        # a gradient into a zero tensor of the whole batch (quadratic in N; see docs/performance.md)
        parts = {k: v.split(1) if torch.is_tensor(v) else [v] * n for k, v in acts.items()}
        return torch.cat([o({k: p[i] for k, p in parts.items()}) for i, o in enumerate(objectives)])

    names = ", ".join(o.name for o in objectives[:3]) + (", ..." if len(objectives) > 3 else "")
    return Objective(fn, layers, f"per_image[{names}]")
