"""Circuits: how the units of one layer feed a unit of a later layer, read from the model's weights.

``expand`` (expanded weights, exact or linearized, read along the model's torch.fx graph from
:mod:`visfeat.graph`), ``contributors`` (top upstream channels or SAE latents), ``nmf`` (weights as RGB
factors), ``circuit`` (a multi-level circuit with feature visualizations) and ``html`` (the page and the SVG).
"""

from ..errors import CircuitError, NonlinearPathError
from ..graph import trace
from .circuit import Circuit, Edge, Node, build_circuit, render_nodes
from .contributors import Contributor, Contributors, Latents, contributors, unit_weights
from .expand import Expanded, direct_weights, expand, path_report
from .html import circuit_context, write_circuit
from .nmf import WeightNMF, weight_nmf

__all__ = [
    "Circuit",
    "CircuitError",
    "Contributor",
    "Contributors",
    "Edge",
    "Expanded",
    "Latents",
    "Node",
    "NonlinearPathError",
    "WeightNMF",
    "build_circuit",
    "circuit_context",
    "contributors",
    "direct_weights",
    "expand",
    "path_report",
    "render_nodes",
    "trace",
    "unit_weights",
    "weight_nmf",
    "write_circuit",
]
