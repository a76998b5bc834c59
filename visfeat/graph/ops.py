"""How each op on a path between two layers is treated: linear (exact), a linear stand-in, or linearized.

:func:`classify` says for one op on a path whether it is linear in the path input (exact), has a linear
stand-in (ReLU-like -> identity, max-pool -> average-pool) or is some other nonlinearity (linearized by its
gradient at the zero baseline). :data:`LINEAR_MODULES` and :data:`RELU_LIKE_MODULES` are the module kinds
it knows, also used by :mod:`visfeat.preact` to find the activation that ends a layer.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..errors import CircuitError


@dataclass(frozen=True)
class Op:
    """How one op on a path is treated: ``linear`` (exact), ``swap`` (linear stand-in) or ``baseline``."""

    kind: str
    label: str  # e.g. "mixed4c_1x1: clamp -> identity"
    swap: object = None  # callable(*args, **kwargs) replacing the op in linearized mode


#: Modules that are linear in their input (exact on a path).
LINEAR_MODULES = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.Linear,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
    nn.Unflatten,
    nn.ZeroPad2d,
    nn.ConstantPad2d,
    nn.ReflectionPad2d,
    nn.ReplicationPad2d,
    nn.PixelShuffle,
    nn.PixelUnshuffle,
    nn.ChannelShuffle,
)
#: Elementwise activation modules with a linear stand-in (the identity) in linearized mode.
RELU_LIKE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.GELU,
    nn.SiLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.Hardswish,
    nn.Hardtanh,
    nn.Mish,
    nn.Softplus,
    nn.Tanh,
)
_LINEAR_FUNCS = {
    operator.add,
    operator.sub,
    operator.neg,
    operator.pos,
    operator.getitem,
    operator.iadd,
    operator.isub,
    getattr,
    torch.cat,
    torch.concat,
    torch.stack,
    torch.flatten,
    torch.reshape,
    torch.add,
    torch.sub,
    torch.neg,
    torch.mean,
    torch.sum,
    torch.chunk,
    torch.split,
    torch.narrow,
    torch.permute,
    torch.transpose,
    torch.squeeze,
    torch.unsqueeze,
    torch.channel_shuffle,
    F.conv1d,
    F.conv2d,
    F.conv3d,
    F.conv_transpose1d,
    F.conv_transpose2d,
    F.linear,
    F.avg_pool1d,
    F.avg_pool2d,
    F.adaptive_avg_pool1d,
    F.adaptive_avg_pool2d,
    F.pad,
    F.dropout,
    F.dropout2d,
    F.pixel_shuffle,
    F.pixel_unshuffle,
}
_RELU_LIKE_FUNCS = {
    F.relu,
    torch.relu,
    F.relu6,
    F.gelu,
    F.silu,
    F.leaky_relu,
    F.elu,
    F.celu,
    F.selu,
    F.hardswish,
    F.hardtanh,
    F.mish,
    F.softplus,
    torch.tanh,
    torch.clamp,
    torch.clamp_min,
}
_LINEAR_METHODS = {
    "view",
    "reshape",
    "flatten",
    "unflatten",
    "permute",
    "transpose",
    "contiguous",
    "squeeze",
    "unsqueeze",
    "mean",
    "sum",
    "size",
    "dim",
    "chunk",
    "split",
    "expand",
    "expand_as",
    "repeat",
    "narrow",
    "add",
    "add_",
    "sub",
    "sub_",
    "neg",
    "__getitem__",
    "to",
    "float",
    "type_as",
    "clone",
    "flip",
    "roll",
}
_RELU_LIKE_METHODS = {"relu", "relu_", "clamp", "clamp_", "clamp_min", "clamp_min_", "tanh", "tanh_"}
_SCALING = {operator.mul, operator.imul, torch.mul, operator.truediv, operator.itruediv, torch.div}
_SCALING_METHODS = {"mul", "mul_", "div", "div_"}
_INTERPOLATE_LINEAR = {"nearest", "linear", "bilinear", "bicubic", "trilinear", "area", "nearest-exact"}


def _identity(x, *args, **kwargs):
    return x


def _max_to_avg(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    if dilation not in (1, (1, 1)) or return_indices:
        raise CircuitError("a max-pool with dilation or return_indices has no average-pool stand-in")
    return F.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad=False)


def _fname(f) -> str:
    return getattr(f, "__name__", str(f))


def classify(node: fx.Node, root: nn.Module, on_path: set[fx.Node], where: str = "") -> Op:
    """How ``node`` (on a path whose nodes are ``on_path``) is treated by the expansion."""
    where = where or node.name
    path_args = [a for a in node.all_input_nodes if a in on_path]
    if node.op == "call_module":
        m = root.get_submodule(node.target)
        typ = type(m).__name__
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            act = getattr(m, "act", None)  # timm BatchNormAct2d: BN, dropout, activation in one module
            if act is None or isinstance(act, nn.Identity):
                return Op("linear", f"{where}: {typ}")
            if not isinstance(act, RELU_LIKE_MODULES):
                return Op("baseline", f"{where}: {typ} with {type(act).__name__} (gradient at baseline)")

            def bn_only(x, _m=m):
                return F.batch_norm(x, _m.running_mean, _m.running_var, _m.weight, _m.bias, False, 0.0, _m.eps)

            return Op("swap", f"{where}: {typ} {type(act).__name__} -> identity", bn_only)
        if isinstance(m, LINEAR_MODULES):
            return Op("linear", f"{where}: {typ}")
        if isinstance(m, nn.Upsample) and m.mode in _INTERPOLATE_LINEAR:
            return Op("linear", f"{where}: {typ}")
        if isinstance(m, RELU_LIKE_MODULES):
            return Op("swap", f"{where}: {typ} -> identity", _identity)
        if type(m) is nn.MaxPool2d:
            k, s, p, d, c = m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode
            return Op(
                "swap",
                f"{where}: MaxPool2d -> AvgPool2d",
                lambda x, k=k, s=s, p=p, d=d, c=c: _max_to_avg(x, k, s, p, d, c),
            )
        if type(m) is nn.AdaptiveMaxPool2d:
            size = m.output_size
            return Op(
                "swap", f"{where}: AdaptiveMaxPool2d -> AdaptiveAvgPool2d", lambda x: F.adaptive_avg_pool2d(x, size)
            )
        return Op("module?", f"{where}: {typ}")  # identity at run time counts as linear (see expand)
    if node.op == "call_function":
        f = node.target
        name = _fname(f)
        if f in _LINEAR_FUNCS:
            if f is F.dropout and node.kwargs.get("training", False):
                return Op("baseline", f"{where}: dropout in training mode")
            return Op("linear", f"{where}: {name}")
        if f is F.batch_norm:
            return Op("linear", f"{where}: batch_norm")
        if f is F.interpolate:
            mode = node.kwargs.get("mode", node.args[3] if len(node.args) > 3 else "nearest")
            if mode in _INTERPOLATE_LINEAR:
                return Op("linear", f"{where}: interpolate({mode})")
        if f in _SCALING:
            linear = len(path_args) <= 1 and (
                f not in (operator.truediv, operator.itruediv, torch.div) or _first_is(node, on_path)
            )
            if linear:
                return Op("linear", f"{where}: {name} by a constant")
            return Op("baseline", f"{where}: {name} of two path tensors (gradient at baseline)")
        if f in _RELU_LIKE_FUNCS:
            return Op("swap", f"{where}: {name} -> identity", _identity)
        if f is F.max_pool2d:
            return Op("swap", f"{where}: max_pool2d -> avg_pool2d", _max_to_avg)
        if f is F.adaptive_max_pool2d:
            return Op("swap", f"{where}: adaptive_max_pool2d -> adaptive_avg_pool2d", F.adaptive_avg_pool2d)
        return Op("baseline", f"{where}: {name} (gradient at baseline)")
    if node.op == "call_method":
        name = str(node.target)
        if name in _LINEAR_METHODS:
            return Op("linear", f"{where}: .{name}()")
        if name in _SCALING_METHODS:
            if len(path_args) <= 1 and (not name.startswith("div") or _first_is(node, on_path)):
                return Op("linear", f"{where}: .{name}() by a constant")
            return Op("baseline", f"{where}: .{name}() of two path tensors (gradient at baseline)")
        if name in _RELU_LIKE_METHODS:
            return Op("swap", f"{where}: .{name}() -> identity", _identity)
        return Op("baseline", f"{where}: .{name}() (gradient at baseline)")
    return Op("linear", f"{where}: {node.op}")


def _first_is(node: fx.Node, on_path: set[fx.Node]) -> bool:
    first = node.args[0] if node.args else None
    rest = [a for a in node.all_input_nodes if a is not first]
    return isinstance(first, fx.Node) and first in on_path and not any(a in on_path for a in rest)
