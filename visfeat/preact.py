"""Pre-activations: the named layer feeding the ReLU-like op that ends a layer.

A unit whose layer ends in ReLU, ReLU6, GELU, SiLU... (also a fused BatchNorm+activation such as timm's
``BatchNormAct2d``) can start dead: zero after a ReLU for the initial image, so it gets no gradient and
renders grey, or below GELU's knee at -0.75, where gradient ascent pushes it further down. Its
pre-activation (the named layer feeding the activation, sign-corrected through a fused BatchNorm) always
has a gradient, and raising it raises the unit. The feeding layer is found once from the model's
torch.fx graph (:func:`visfeat.graph.trace`), for CNNs and timm ViTs alike, not per model;
:func:`visfeat.units.preact_objective` builds the unit's objective on it.
"""

from __future__ import annotations

import torch.fx as fx
from torch import nn

from .errors import VisfeatError
from .graph import LINEAR_MODULES, RELU_LIKE_MODULES, Graph, classify, trace


def preactivation_layer(model, layer: str, channel: int = 0) -> tuple[str, float] | None:
    """The named layer whose output feeds the ReLU-like op that ends ``layer``, and the sign that orders it
    like the activation's input for ``channel`` (-1 through a fused BatchNorm with a negative scale); None
    when there is none, or when either module is called more than once (its hook would see another call)."""
    module = dict(getattr(model, "module", model).named_modules()).get(layer)
    if module is None or _plain_leaf(module):
        return None  # nothing to skip, and no trace (tracing runs forward() symbolically)
    try:
        g = trace(model)
    except VisfeatError:
        return None
    layer = _fused_parent(g, layer)
    if layer not in g.outputs or g.calls.get(layer, 1) > 1:
        return None
    found = _activation_input(g, g.outputs[layer], channel)
    if found is None:
        return None
    node, sign = found
    name = g.name_of(node)
    if name not in g.outputs or g.calls.get(name, 1) > 1:
        return None
    return name, sign


def _fused_parent(g: Graph, layer: str) -> str:
    """``bn2`` for ``bn2.act``, the activation inside a fused BatchNorm that the graph keeps whole."""
    parent, _, leaf = layer.rpartition(".")
    if layer in g.outputs or leaf != "act" or parent not in g.outputs:
        return layer
    return parent if isinstance(g.root.get_submodule(parent), nn.modules.batchnorm._BatchNorm) else layer


def _plain_leaf(m: nn.Module) -> bool:
    """A conv, linear, norm, pooling... module without submodules: no activation can end it."""
    norms = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
    return not any(True for _ in m.children()) and isinstance(m, LINEAR_MODULES + norms) and not _is_activation(m)


def _is_activation(m: nn.Module) -> bool:
    """A ReLU-like module, or a BatchNorm with a fused ReLU-like activation (timm's BatchNormAct2d)."""
    act = getattr(m, "act", None)
    return isinstance(m, RELU_LIKE_MODULES) or (
        isinstance(m, nn.modules.batchnorm._BatchNorm) and isinstance(act, RELU_LIKE_MODULES)
    )


def _activation_input(g: Graph, node: fx.Node, channel: int) -> tuple[fx.Node, float] | None:
    """The input of ``node`` when ``node`` is a ReLU-like op (or a fused BatchNorm+ReLU-like), with its sign."""
    sign = 1.0
    if node.op == "call_module":
        m = g.root.get_submodule(node.target)
        if not _is_activation(m):
            return None
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None:
            if not 0 <= channel < m.weight.numel() or float(m.weight[channel]) == 0:
                return None
            sign = 1.0 if float(m.weight[channel]) > 0 else -1.0
    else:
        op = classify(node, g.root, {node})
        if op.kind != "swap" or "identity" not in op.label or _inplace(node):
            return None
    inp = node.args[0] if node.args else None
    return (inp, sign) if isinstance(inp, fx.Node) else None


def _inplace(node: fx.Node) -> bool:
    """A functional activation that overwrites its input (``x.relu_()``, ``F.relu(x, inplace=True)``), so the
    captured input would hold the activation."""
    if node.op == "call_method" and str(node.target).endswith("_"):
        return True
    return node.kwargs.get("inplace") is True or any(a is True for a in node.args[1:])
