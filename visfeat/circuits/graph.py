"""The computation graph of a model (torch.fx), the path between two layers, and how each op on it is linear.

:func:`trace` turns ``model.module`` into an fx graph and records which graph node is the output of
every named submodule, so layers are addressed by their ``named_modules()`` names. :func:`classify`
says for one op on a path whether it is linear in the path input (exact), has a linear stand-in
(ReLU-like -> identity, max-pool -> average-pool) or is some other nonlinearity (linearized by its
gradient at the zero baseline).
"""

from __future__ import annotations

import operator
import weakref
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..errors import UnknownLayerError, VisfeatError, unknown
from ..hooks import LOGITS


class CircuitError(VisfeatError, ValueError):
    """A circuit request that the model's graph cannot answer (no path, untraceable model, bad mode)."""


class NonlinearPathError(CircuitError):
    """Exact mode met an op that is not linear in the source layer."""


@dataclass
class Graph:
    """A traced model: the fx graph, the root module and the output node of every named submodule."""

    root: nn.Module
    graph: fx.Graph
    outputs: dict[str, fx.Node]  # module name -> node holding its output (of its last call)
    logits_layer: str = ""
    calls: dict[str, int] = field(default_factory=dict)  # module name -> times forward() calls it

    def node(self, layer: str) -> fx.Node:
        """The node whose value is ``layer``'s output (``"input"``: the model input, ``"logits"``: the output)."""
        if layer == "input":
            return next(n for n in self.graph.nodes if n.op == "placeholder")
        if layer == LOGITS:
            if self.logits_layer:
                return self.outputs[self.logits_layer]
            out = next(n for n in self.graph.nodes if n.op == "output")
            arg = out.args[0]
            if not isinstance(arg, fx.Node):
                raise CircuitError("the model returns several outputs; name the logits layer with Model(logits_layer=)")
            return arg
        if layer not in self.outputs:
            raise UnknownLayerError(unknown("layer", layer, list(self.outputs) + ["input", LOGITS]))
        return self.outputs[layer]

    def name_of(self, node: fx.Node) -> str:
        """The outermost module name whose output is ``node``, else the fx node name."""
        names = [name for name, n in self.outputs.items() if n is node]
        return min(names, key=lambda s: (s.count("."), len(s))) if names else node.name


def _timm_leaves() -> tuple[tuple[type, ...], tuple]:
    try:
        from timm.layers import _fx

        return tuple(_fx.get_notrace_modules()), tuple(_fx.get_notrace_functions())
    except ImportError:  # timm is a dependency, but keep the graph code usable without it
        return (), ()


class _Tracer(fx.Tracer):
    """fx tracer that keeps timm's untraceable layers whole and records every module's output node."""

    def __init__(self) -> None:
        self._leaf_types, funcs = _timm_leaves()
        super().__init__(autowrap_functions=funcs)
        self.outputs: dict[str, fx.Node] = {}
        self.calls: dict[str, int] = {}

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, self._leaf_types) or super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        out = super().call_module(m, forward, args, kwargs)
        name = self.path_of_module(m)
        self.calls[name] = self.calls.get(name, 0) + 1
        if name and isinstance(out, fx.Proxy):
            self.outputs[name] = out.node
        return out


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def trace(model) -> Graph:
    """The fx graph of ``model`` (a visfeat Model or nn.Module), cached per module."""
    module = getattr(model, "module", model)
    logits = getattr(model, "logits_layer", "")
    if module in _CACHE:
        return _CACHE[module]
    tracer = _Tracer()
    try:
        graph = tracer.trace(module)
    except Exception as e:  # fx raises many kinds of errors on data-dependent control flow
        raise CircuitError(
            f"cannot trace {type(module).__name__} with torch.fx ({type(e).__name__}: {e}); circuits need a "
            "model whose forward() has no data-dependent Python control flow"
        ) from e
    g = Graph(module, graph, tracer.outputs, logits, tracer.calls)
    _CACHE[module] = g
    return g


def ancestors(node: fx.Node) -> set[fx.Node]:
    """``node`` and every node it depends on."""
    seen, stack = {node}, [node]
    while stack:
        for a in stack.pop().all_input_nodes:
            if a not in seen:
                seen.add(a)
                stack.append(a)
    return seen


def descendants(node: fx.Node) -> set[fx.Node]:
    """``node`` and every node that depends on it."""
    seen, stack = {node}, [node]
    while stack:
        for u in stack.pop().users:
            if u not in seen:
                seen.add(u)
                stack.append(u)
    return seen


def path_nodes(source: fx.Node, target: fx.Node) -> set[fx.Node]:
    """Nodes on some path from ``source`` to ``target`` (both included); empty when none."""
    down = descendants(source)
    if target not in down:
        return set()
    return down & ancestors(target)


def simple_paths(source: fx.Node, target: fx.Node, limit: int = 64) -> list[list[fx.Node]]:
    """Up to ``limit`` paths from ``source`` to ``target`` as node lists; more raise CircuitError."""
    on = path_nodes(source, target)
    paths: list[list[fx.Node]] = []

    def walk(node: fx.Node, trail: list[fx.Node]) -> None:
        if node is target:
            paths.append(trail)
            if len(paths) > limit:
                raise CircuitError(f"more than {limit} paths between the layers; per-path norms are skipped")
            return
        for u in node.users:
            if u in on:
                walk(u, trail + [u])

    walk(source, [source])
    return paths


# ----------------------------------------------------------------------------------------------
# How each op behaves on a path


@dataclass(frozen=True)
class Op:
    """How one op on a path is treated: ``linear`` (exact), ``swap`` (linear stand-in) or ``baseline``."""

    kind: str
    label: str  # e.g. "mixed4c_1x1: clamp -> identity"
    swap: object = None  # callable(*args, **kwargs) replacing the op in linearized mode


_LINEAR_MODULES = (
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
_RELU_LIKE_MODULES = (
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
            if not isinstance(act, _RELU_LIKE_MODULES):
                return Op("baseline", f"{where}: {typ} with {type(act).__name__} (gradient at baseline)")

            def bn_only(x, _m=m):
                return F.batch_norm(x, _m.running_mean, _m.running_var, _m.weight, _m.bias, False, 0.0, _m.eps)

            return Op("swap", f"{where}: {typ} {type(act).__name__} -> identity", bn_only)
        if isinstance(m, _LINEAR_MODULES):
            return Op("linear", f"{where}: {typ}")
        if isinstance(m, nn.Upsample) and m.mode in _INTERPOLATE_LINEAR:
            return Op("linear", f"{where}: {typ}")
        if isinstance(m, _RELU_LIKE_MODULES):
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


@dataclass
class PathReport:
    """The ops on the path between two layers and how the expansion treats them."""

    source: str
    target: str
    ops: list[Op] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return all(op.kind == "linear" for op in self.ops)

    @property
    def blocking(self) -> list[Op]:
        """The ops that stop an exact path."""
        return [op for op in self.ops if op.kind != "linear"]
