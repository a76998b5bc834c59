"""The gradient through the ops between two nodes of a traced graph, each op run as the expansion treats it.

:func:`path_gradient` replaces the source node's value by a zero tensor that requires grad, runs the ops
that lead to the target (linear ones as they are; in linearized mode the stand-ins of
:func:`visfeat.graph.classify`; in exact mode any nonlinear op is an error) and returns the gradient of a
readout of the target with respect to the source: the linear map that :mod:`.expand` crops into kernels.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
from torch.fx.node import map_arg

from ..errors import CircuitError, NonlinearPathError
from ..graph import Graph, Op, ancestors, classify, descendants, path_nodes

_INPLACE_FUNCS = {operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul}
_INPLACE_FUNCS[operator.itruediv] = operator.truediv


def device_of(module: torch.nn.Module) -> torch.device:
    """The device of ``module``'s parameters (the CPU without any)."""
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def path_gradient(
    g: Graph,
    x: torch.Tensor,
    source: fx.Node,
    target: fx.Node,
    readout,
    batch: int,
    mode: str,
    allowed: set | None = None,
) -> tuple[torch.Tensor, list[Op]]:
    """Gradient of ``readout(target value)`` with respect to the source value (a zero ``[batch, ...]`` leaf)."""
    on = path_nodes(source, target)
    if not on:
        raise CircuitError(f"{g.name_of(target)} does not depend on {g.name_of(source)}: no path between them")
    needed = ancestors(target)
    acts = descendants(next(n for n in g.graph.nodes if n.op == "placeholder"))
    env: dict[fx.Node, object] = {}
    ops: list[Op] = []
    leaf = None
    for node in g.graph.nodes:
        if node not in needed:
            continue
        if node.op == "placeholder":
            env[node] = x
        elif node is not source and node in on:
            env[node] = _path_op(g, node, env, on, acts, batch, mode, allowed, ops)
        else:
            with torch.no_grad():
                env[node] = call_node(
                    g, node, map_arg(node.args, env.__getitem__), map_arg(node.kwargs, env.__getitem__)
                )
        if node is source:
            value = env[node]
            if not torch.is_tensor(value):
                raise CircuitError(f"{g.name_of(source)} does not output a single tensor; pick another layer")
            leaf = torch.zeros((batch, *value.shape[1:]), device=value.device, dtype=value.dtype, requires_grad=True)
            env[node] = leaf * 1.0  # a non-leaf copy, so in-place ops downstream are allowed
        if node is target:
            break
    out = env[target]
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not torch.is_tensor(out) or not out.requires_grad:
        raise CircuitError(f"{g.name_of(target)} does not change with {g.name_of(source)} through the traced graph")
    (grad,) = torch.autograd.grad(readout(out), leaf, allow_unused=True)
    if grad is None:
        grad = torch.zeros_like(leaf)
    return grad.detach(), ops


def call_node(g: Graph, node: fx.Node, args, kwargs):
    """Run one graph node on concrete ``args`` / ``kwargs``."""
    if node.op == "get_attr":
        obj = g.root
        for part in str(node.target).split("."):
            obj = getattr(obj, part)
        return obj
    if node.op == "call_function":
        return node.target(*args, **kwargs)
    if node.op == "call_method":
        self_obj, *rest = args
        return getattr(self_obj, node.target)(*rest, **kwargs)
    if node.op == "call_module":
        return g.root.get_submodule(node.target)(*args, **kwargs)
    if node.op == "output":
        return args[0]
    raise CircuitError(f"unsupported graph node {node.op} {node.target}")


def _path_op(g, node, env, on, acts, batch, mode, allowed, ops):
    def value(a: fx.Node):
        v = env[a]
        if a not in on and a in acts and torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == 1 and batch > 1:
            return v.expand(batch, *v.shape[1:])  # a side input of batch 1 next to the batched path
        if allowed is not None and a in on and (a, node) not in allowed and torch.is_tensor(v):
            return v.detach()  # edge not on the chosen path
        return v

    args = map_arg(node.args, value)
    kwargs = dict(map_arg(node.kwargs, value))
    if kwargs.get("inplace"):
        kwargs["inplace"] = False
    op = classify(node, g.root, on, g.name_of(node))
    if node.op == "call_function" and node.target is torch.nn.functional.pad and len(args) > 3:
        args = (*args[:3], 0.0)  # the linear part of a constant pad pads with zeros (avoids -inf)
    if node.op == "call_function" and node.target is torch.nn.functional.pad and "value" in kwargs:
        kwargs["value"] = 0.0
    if node.op == "call_function" and node.target in _INPLACE_FUNCS:
        node_fn = _INPLACE_FUNCS[node.target]
        out = node_fn(*args, **kwargs)
    elif op.kind == "swap":
        _check_mode(g, op, mode)
        ops.append(op)
        return op.swap(*args, **kwargs) if node.op != "call_method" else op.swap(args[0])
    elif node.op == "call_method" and str(node.target).endswith("_") and not str(node.target).startswith("__"):
        self_obj, *rest = args
        out = getattr(self_obj, str(node.target)[:-1])(*rest, **kwargs)
    else:
        out = call_node(g, node, args, kwargs)
    if op.kind == "module?":
        first = args[0] if args else None
        op = Op("linear", op.label) if out is first else Op("baseline", op.label + " (gradient at baseline)")
    if op.kind != "linear":
        _check_mode(g, op, mode)
    ops.append(op)
    return out


def _check_mode(g: Graph, op: Op, mode: str) -> None:
    if mode == "exact":
        raise NonlinearPathError(
            f"no exact linear path: {op.label.split(' -> ')[0]} is not linear in the source layer. "
            "Use mode='linearized' (ReLU-like ops -> identity, max-pool -> average-pool), or pick layers "
            "with only linear ops between them"
        )


@torch.no_grad()
def node_shapes(g: Graph, x: torch.Tensor, target: fx.Node) -> dict[fx.Node, tuple]:
    """The output shape of every node that ``target`` depends on, for the model input ``x``."""
    env: dict[fx.Node, object] = {}
    shapes = {}
    needed = ancestors(target)
    for node in g.graph.nodes:
        if node not in needed:
            continue
        if node.op == "placeholder":
            env[node] = x
        else:
            env[node] = call_node(g, node, map_arg(node.args, env.__getitem__), map_arg(node.kwargs, env.__getitem__))
        v = env[node]
        if isinstance(v, (tuple, list)) and v and torch.is_tensor(v[0]):
            v = v[0]
        if torch.is_tensor(v):
            shapes[node] = tuple(v.shape)
        if node is target:
            break
    return shapes
