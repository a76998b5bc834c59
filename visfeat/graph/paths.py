"""Paths in a traced graph: the nodes a node depends on or feeds, and the paths between two nodes."""

from __future__ import annotations

import torch.fx as fx

from ..errors import CircuitError


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
