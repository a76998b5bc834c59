"""A model's torch.fx graph: ``trace`` (graph + each named layer's output node), ``paths`` (between two
nodes) and ``ops`` (how each op on a path is treated: linear, a linear stand-in, or linearized)."""

from __future__ import annotations

from .ops import LINEAR_MODULES, RELU_LIKE_MODULES, Op, classify
from .paths import ancestors, descendants, path_nodes, simple_paths
from .trace import Graph, trace

__all__ = [
    "LINEAR_MODULES",
    "RELU_LIKE_MODULES",
    "Graph",
    "Op",
    "ancestors",
    "classify",
    "descendants",
    "path_nodes",
    "simple_paths",
    "trace",
]
