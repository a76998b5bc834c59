"""A circuit: a target unit, its top contributors in one or more earlier layers, the weights between them,
and a feature visualization of every node (one batched ``visfeat.render`` call)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..errors import CircuitError
from ..units import parse_unit
from .contributors import CANCELLATION, Latents, contributors
from .nmf import WeightNMF, weight_nmf


@dataclass
class Node:
    """A unit in the circuit: ``unit`` is its unit string (``mixed4b:373``, ``logit:sports car``)."""

    unit: str
    level: int
    image: torch.Tensor | None = None  # feature visualization [3, H, W] in [0, 1]


@dataclass
class Edge:
    """The expanded weight from ``src`` (a unit of the lower level) to ``dst``."""

    src: str
    dst: str
    kernel: torch.Tensor  # [kh, kw]
    excite: float
    inhibit: float
    cancellation: float | None = None


@dataclass
class Circuit:
    """Nodes by level (0 = target), edges, how each level's weights were computed, warnings, the target's NMF."""

    target: str
    layers: list[str]  # the layer of each level: target layer, then the --from layers
    nodes: list[Node]
    edges: list[Edge]
    modes: list[str] = field(default_factory=list)  # per source level: "exact" or "linearized"
    linearized: list[list[str]] = field(default_factory=list)  # per source level: the ops replaced
    warnings: list[str] = field(default_factory=list)
    nmf: WeightNMF | None = None
    render_settings: dict = field(default_factory=dict)
    latents: list[Latents] = field(default_factory=list)  # SAEs whose latents are nodes

    def level(self, i: int) -> list[Node]:
        return [n for n in self.nodes if n.level == i]

    def to_dict(self) -> dict:
        """JSON-ready summary (kernels as nested lists)."""
        return {
            "target": self.target,
            "layers": self.layers,
            "modes": self.modes,
            "linearized": self.linearized,
            "warnings": self.warnings,
            "nodes": [{"unit": n.unit, "level": n.level} for n in self.nodes],
            "edges": [
                {
                    "src": e.src,
                    "dst": e.dst,
                    "excite": round(e.excite, 6),
                    "inhibit": round(e.inhibit, 6),
                    "cancellation": None if e.cancellation is None else round(e.cancellation, 4),
                    "kernel": [[round(v, 6) for v in row] for row in e.kernel.tolist()],
                }
                for e in self.edges
            ],
            "nmf_top_channels": [self.nmf.top_channels(i) for i in range(3)] if self.nmf else [],
            "nmf_rgb": [[[round(v, 4) for v in row] for row in ch] for ch in self.nmf.rgb().tolist()]
            if self.nmf
            else None,
            "nmf_error": round(self.nmf.relative_error, 4) if self.nmf else None,
            "render": self.render_settings,
        }


def _layer_of(unit: str) -> str:
    u = parse_unit(unit)
    return "logits" if u.is_logit else u.layer.split("/")[0]


def _latents_of(unit: str, latents: Sequence[Latents]) -> Latents | None:
    """The SAE latents a ``layer/NAME:j`` unit refers to (None for channel and logit units)."""
    head = unit.split(":", 1)[0]
    if "/" not in head:
        return None
    layer, name = head.split("/", 1)
    for lat in latents:
        if lat.layer == layer and lat.name == name:
            return lat
    raise CircuitError(f"{unit} names SAE {name!r} on {layer!r}, but no such SAE was given (latents=...)")


def build_circuit(
    model,
    unit: str,
    sources: list[str],
    k: int = 3,
    width: int | None = None,
    mode: str = "auto",
    latents: Sequence[Latents] = (),
    threshold: float = CANCELLATION,
) -> Circuit:
    """The circuit of ``unit`` back through ``sources`` (nearest the target first): at each level the top-``k``
    excitatory and top-``k`` inhibitory contributors of every node of the level above, at most ``width`` per level.

    ``latents``: SAEs as endpoints. The target may be a latent (``layer/NAME:j``); a source layer that
    has latents in the list contributes latents (decoder directions) instead of channels."""
    width = width or 2 * k
    latents = [latents] if isinstance(latents, Latents) else list(latents)
    nodes = [Node(unit, 0)]
    edges: list[Edge] = []
    modes, linearized, warnings = [], [], []
    nmf = None
    parents = [unit]
    for level, source in enumerate(sources, start=1):
        src_lat = next((lat for lat in latents if lat.layer == source), None)
        found: dict[int, float] = {}
        weights = {}
        level_modes, level_ops = set(), []
        for p in parents:
            c = contributors(
                model,
                p,
                source,
                k=k,
                mode=mode,
                latents=_latents_of(p, latents),
                source_latents=src_lat,
                threshold=threshold,
            )
            weights[p] = c
            level_modes.add(c.mode)
            level_ops += c.linearized
            warnings += c.warnings
            for con in c.excite + c.inhibit:
                found[con.index] = max(found.get(con.index, 0.0), con.excite - con.inhibit)
            if level == 1:
                nmf = weight_nmf(c.weights)
        keep = sorted(found, key=lambda i: -found[i])[:width]
        prefix = source if src_lat is None else f"{source}/{src_lat.name}"
        children = [f"{prefix}:{i}" for i in keep]
        nodes += [Node(ch, level) for ch in children]
        for p, c in weights.items():
            ratio = {con.index: con.cancellation for con in c.excite + c.inhibit}
            for i, ch in zip(keep, children, strict=True):
                w = c.weights[i]
                pos, neg = float(w.clamp_min(0).sum()), float(w.clamp_max(0).sum())
                if pos or neg:
                    edges.append(Edge(ch, p, w, pos, neg, ratio.get(i)))
        modes.append("linearized" if "linearized" in level_modes else "exact")
        linearized.append(list(dict.fromkeys(level_ops)))
        parents = children
    return Circuit(unit, [_layer_of(unit), *sources], nodes, edges, modes, linearized, warnings, nmf, latents=latents)


def render_nodes(
    model,
    circuit: Circuit,
    steps: int = 256,
    seed: int = 0,
    progress: bool = True,
    preact: bool = True,
    **render_kwargs,
) -> Circuit:
    """Feature-visualize every node of ``circuit`` in one batched ``visfeat.render`` call (images set in place).

    With ``preact`` a contributor channel that ends in a ReLU-like op is rendered from its pre-activation
    (:func:`visfeat.preact.preact_objective`), so channels that are off for the initial image still get a picture."""
    from .. import objectives as O
    from ..render import render

    objs = []
    for n in circuit.nodes:
        u = parse_unit(n.unit)
        lat = _latents_of(n.unit, circuit.latents)
        if lat is not None:  # an SAE latent: its encoder direction (the latent before its activation)
            objs.append(O.direction(lat.layer, lat.encoder[int(u.index)]))
        elif n.level == 0:
            objs.append(u.objective())
        else:
            objs.append(u.objective(model, preact=preact))  # a channel unit (source:i)
    result = render(model, objs, steps=steps, seed=seed, progress=progress, **render_kwargs)
    for n, img in zip(circuit.nodes, result.images, strict=True):
        n.image = img
    circuit.render_settings = dict(result.settings, objectives=result.names)
    return circuit
