"""The computation graph of a model (torch.fx), with the output node of every named submodule.

:func:`trace` turns ``model.module`` into an fx graph and records which graph node is the output of
every named submodule, so layers are addressed by their ``named_modules()`` names. Circuits read
weights along its paths; :mod:`visfeat.preact` finds the layer feeding an activation in it.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch.fx as fx
from torch import nn

from ..errors import CircuitError, UnknownLayerError, unknown
from ..hooks import LOGITS


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
