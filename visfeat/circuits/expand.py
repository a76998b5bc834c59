"""Expanded weights between two layers: the linear map from a source layer to one position of a target.

The map is read off the model's own graph (:mod:`visfeat.graph`): the source layer's output is replaced by a
zero tensor that requires grad, the ops between the two layers run (linear ones as they are; in
linearized mode ReLU-like ops become the identity and max-pools average-pools; any other nonlinearity
contributes its gradient at that zero baseline), and the gradient of the target's centre position is
cropped to its receptive field, at an input size large enough that no padding reaches it. On a path
of linear ops (convolutions of any kernel, depthwise and 1x1 convs, BatchNorm, average pooling,
concatenation, residual additions) this is the exact composition of the weights.

Targets without spatial positions (class logits, after a global pool) are expanded through the last
spatial node P before the pool: ``weights[o]`` is the kernel of the source onto one position of P,
weighted by the gradient of logit ``o`` with respect to P summed over positions, so that summing the
kernel gives the effect of a spatially constant source channel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.fx as fx

from ..errors import CircuitError
from ..graph import Graph, Op, path_nodes, simple_paths, trace
from ..hooks import LOGITS
from .pathgrad import device_of, node_shapes, path_gradient

MODES = ("auto", "exact", "linearized")


@dataclass
class Expanded:
    """Expanded weights ``[rows, in, kh, kw]`` from ``source`` to rows of ``target`` and how they were made."""

    weights: torch.Tensor
    source: str
    target: str
    rows: list  # what each row is: a target channel index, or a label for a direction
    mode: str  # "exact" (every op on the path is linear) or "linearized"
    linearized: list[str] = field(default_factory=list)  # ops replaced or linearized, "node: op -> stand-in"
    size: tuple[int, int] = (0, 0)  # model input size the kernels were measured at
    pooled_through: str = ""  # for targets without positions: the spatial node the kernels land on
    path_weights: torch.Tensor | None = None  # [paths, rows, in, kh, kw] when per-path weights were asked for
    paths: list[str] = field(default_factory=list)  # one description per path

    def row(self, key) -> int:
        """Index of a row by its label (target channel)."""
        try:
            return self.rows.index(key)
        except ValueError as e:
            raise CircuitError(f"row {key!r} was not expanded; expanded rows: {self.rows[:10]}...") from e

    def cancellation(self) -> torch.Tensor:
        """``|W| / sum over paths |W_path|`` per (row, in) edge, Frobenius norms over the kernel (1: none)."""
        if self.path_weights is None:
            raise CircuitError("per-path weights were not computed; call expand(..., per_path=True)")
        total = self.weights.flatten(2).norm(dim=2)
        parts = self.path_weights.flatten(3).norm(dim=3).sum(0)
        return torch.where(parts > 0, total / parts.clamp_min(1e-30), torch.ones_like(total))


def _native_size(model) -> tuple[int, int]:
    """The model's input size (a plain module without an InputSpec: 224 x 224)."""
    return getattr(model, "input_size", (224, 224))


def _image(model, size: tuple[int, int], device) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, *size, generator=g).to(device)
    pre = getattr(model, "preprocess", None)
    return pre(x) if pre is not None else x


def _bbox(support: torch.Tensor) -> tuple[int, int, int, int]:
    ys = support.any(1).nonzero()
    xs = support.any(0).nonzero()
    if len(ys) == 0:
        return 0, 0, 0, 0
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def _centre_readout(vectors: torch.Tensor):
    def readout(out: torch.Tensor) -> torch.Tensor:
        if out.dim() == 4:
            h, w = out.shape[-2:]
            return (out[:, :, h // 2, w // 2] * vectors).sum()
        if out.dim() == 2:
            return (out * vectors).sum()
        if out.dim() == 3:  # tokens [B, T, D]: the middle token
            return (out[:, out.shape[1] // 2] * vectors).sum()
        raise CircuitError(f"cannot read out a target of shape {tuple(out.shape)}")

    return readout


def _pool_node(g: Graph, source: fx.Node, target: fx.Node, shapes: dict) -> fx.Node:
    """The last spatial node on the path before a target without positions (e.g. the map a global pool reads)."""
    on = path_nodes(source, target)
    order = [n for n in g.graph.nodes if n in on]
    spatial = [n for n in order if _is_spatial(shapes.get(n))]
    if not spatial:
        return source
    pool = spatial[-1]
    before = path_nodes(source, pool)
    after = path_nodes(pool, target)
    stray = on - before - after
    if stray:
        raise CircuitError(
            f"{g.name_of(target)} is reached from {g.name_of(source)} by paths that skip {g.name_of(pool)} "
            f"(e.g. {sorted(n.name for n in stray)[:3]}); expand to {g.name_of(pool)} instead"
        )
    return pool


def _is_spatial(shape) -> bool:
    return shape is not None and len(shape) == 4 and shape[-1] * shape[-2] > 1


def _kernels(
    model, g: Graph, source: fx.Node, pool: fx.Node, vectors: torch.Tensor, mode: str, max_scale: int = 4
) -> tuple[torch.Tensor, list[Op], tuple[int, int], tuple[int, int, int, int]]:
    """Centre kernels ``[B, in, kh, kw]`` of ``vectors . pool[:, centre]`` over the source, padding cropped away."""
    dev = device_of(g.root)
    gen = torch.Generator().manual_seed(1)
    probe = torch.randn(1, vectors.shape[1], generator=gen).to(dev, vectors.dtype)
    vecs = torch.cat([vectors.to(dev), probe])  # the probe row finds the receptive field of every row
    base = _native_size(model)
    scale = 1
    while True:
        size = (base[0] * scale, base[1] * scale)
        grad, ops = path_gradient(g, _image(model, size, dev), source, pool, _centre_readout(vecs), len(vecs), mode)
        if grad.dim() != 4:
            return grad[:-1].reshape(len(vectors), -1, 1, 1), ops, size, (0, 1, 0, 1)
        support = grad[-1].abs().sum(0) > 0
        if not support.any():  # the target ignores the source (e.g. a zero-initialized BN): zero weights
            h, w = support.shape
            return (
                grad[:-1, :, h // 2 : h // 2 + 1, w // 2 : w // 2 + 1],
                ops,
                size,
                (h // 2, h // 2 + 1, w // 2, w // 2 + 1),
            )
        y0, y1, x0, x1 = _bbox(support)
        h, w = support.shape
        if min(y0, x0, h - y1, w - x1) >= 1 or scale >= max_scale:
            if min(y0, x0, h - y1, w - x1) < 1:
                raise CircuitError(
                    f"the receptive field of {g.name_of(pool)} on {g.name_of(source)} still touches the border at "
                    f"{size[0]}x{size[1]} px input; pick closer layers"
                )
            return grad[:-1, :, y0:y1, x0:x1], ops, size, (y0, y1, x0, x1)
        scale *= 2


def _post_vectors(
    model, g: Graph, pool: fx.Node, target: fx.Node, readout_vectors: torch.Tensor, mode: str
) -> tuple[torch.Tensor, list[Op]]:
    """For a target without positions: d(readout)/d(pool) summed over positions, ``[B, C_pool]``."""
    dev = device_of(g.root)
    vecs = readout_vectors.to(dev)
    grad, ops = path_gradient(
        g, _image(model, _native_size(model), dev), pool, target, _centre_readout(vecs), len(vecs), mode
    )
    return (grad.flatten(2).sum(2) if grad.dim() == 4 else grad), ops


def _channels(shapes: dict, target: fx.Node) -> int:
    shape = shapes[target]
    return shape[-1] if len(shape) == 3 else shape[1]


def expand(
    model,
    source: str,
    target: str,
    channels: list[int] | None = None,
    directions: torch.Tensor | None = None,
    mode: str = "auto",
    per_path: bool = False,
    chunk: int = 64,
) -> Expanded:
    """Expanded weights from layer ``source`` to ``target`` channels (all when ``channels`` is None).

    ``directions`` ``[n, C_target]``: read out directions of the target instead of channels (e.g. SAE
    encoder directions). ``mode``: ``"exact"`` raises :class:`NonlinearPathError` naming the first op
    that is not linear, ``"linearized"`` replaces nonlinear ops, ``"auto"`` is exact where the path is
    linear; the result's ``mode`` says which was used. ``per_path`` also returns one weight per
    path through the graph (for :meth:`Expanded.cancellation`).
    """
    if mode not in MODES:
        raise CircuitError(f"mode must be one of {MODES}, got {mode!r}")
    g = trace(model)
    s_node, t_node = g.node(source), g.node(target)
    if not path_nodes(s_node, t_node):
        raise CircuitError(
            f"{target!r} does not depend on {source!r} in the traced graph; the source must come before the target"
        )
    dev = device_of(g.root)
    x = _image(model, _native_size(model), dev)
    shapes = node_shapes(g, x, t_node)
    pool = _pool_node(g, s_node, t_node, shapes)
    if directions is not None:
        vectors = torch.as_tensor(directions, dtype=torch.float32)
        rows: list = [f"direction {i}" for i in range(len(vectors))]
    else:
        n = _channels(shapes, t_node)
        rows = list(range(n)) if channels is None else [int(c) for c in channels]
        bad = [c for c in rows if not 0 <= c < n]
        if bad:
            raise CircuitError(f"channels {bad} are out of range for {target!r}, which has {n} (0..{n - 1})")
        vectors = torch.eye(n)[rows]
    vectors = vectors.to(dev)
    pieces, path_pieces, ops_all = [], [], []
    size = (0, 0)
    paths = simple_paths(s_node, pool) if per_path else []
    for start in range(0, len(vectors), chunk):
        v = vectors[start : start + chunk]
        if pool is not t_node:
            v, ops = _post_vectors(model, g, pool, t_node, v, mode)
            ops_all += ops
        k, ops, size, box = _kernels(model, g, s_node, pool, v, mode)
        ops_all += ops
        pieces.append(k.cpu())
        if per_path:
            img = _image(model, size, dev)
            per = []
            for p in paths:
                allowed = set(zip(p[:-1], p[1:], strict=True))
                grad, _ = path_gradient(g, img, s_node, pool, _centre_readout(v), len(v), "linearized", allowed)
                per.append((grad if grad.dim() != 4 else grad[:, :, box[0] : box[1], box[2] : box[3]]).cpu())
            path_pieces.append(torch.stack(per).reshape(len(paths), *k.shape))
    labels = list(dict.fromkeys(op.label for op in ops_all if op.kind != "linear"))
    return Expanded(
        weights=torch.cat(pieces),
        source=source,
        target=target,
        rows=rows,
        mode="exact" if not labels else "linearized",
        linearized=labels,
        size=size,
        pooled_through="" if pool is t_node else g.name_of(pool),
        path_weights=torch.cat(path_pieces, 1) if per_path else None,
        paths=[" -> ".join(g.name_of(n) for n in p) for p in paths],
    )


def path_report(model, source: str, target: str) -> list[Op]:
    """Every op between two layers with how the expansion treats it (``linear``/``swap``/``baseline``)."""
    g = trace(model)
    s, t = g.node(source), g.node(target)
    dev = device_of(g.root)
    shapes = node_shapes(g, _image(model, _native_size(model), dev), t)
    pool = _pool_node(g, s, t, shapes)
    width = _channels(shapes, pool)
    _, ops = path_gradient(
        g, _image(model, _native_size(model), dev), s, pool, _centre_readout(torch.ones(1, width)), 1, "auto"
    )
    if pool is not t:
        _, post = path_gradient(g, _image(model, _native_size(model), dev), pool, t, lambda out: out.sum(), 1, "auto")
        ops += post
    return ops


def direct_weights(conv: torch.nn.Module, bn: torch.nn.Module | None = None) -> torch.Tensor:
    """A conv's weight ``[out, in/groups, kh, kw]`` with the BatchNorm that follows it folded in."""
    w = conv.weight.detach()
    if bn is None:
        return w.clone()
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps) if bn.weight is not None else None
    if scale is None:
        scale = 1 / torch.sqrt(bn.running_var + bn.eps)
    return w * scale.view(-1, 1, 1, 1)


__all__ = ["Expanded", "LOGITS", "MODES", "direct_weights", "expand", "path_report"]
