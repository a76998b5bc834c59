"""The package's shape, read from the source with ``ast`` (every import statement, function-level ones too):
no import cycle between modules, no import from a lower layer to a higher one in the order that
``docs/architecture.md`` lists, no module over 400 lines, and ``__init__.py`` files that only re-export.

An edge ``a -> b`` is an import statement in module ``a`` that names module ``b`` (``import visfeat.b``,
``from visfeat import b``, ``from .b import name``, ``from . import b``); ``from visfeat.b import name``
names ``b`` itself, or its submodule ``b.name`` when there is one. Packages a statement passes through
(``visfeat.models`` in ``from visfeat.models.model import Model``) are not edges: Python initializes them
first, and each ``__init__.py`` is checked on its own.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "visfeat"
DOC = ROOT / "docs" / "architecture.md"
MAX_LINES = 400


def _modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the package: dotted name -> (file, is a package ``__init__``)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


MODULES = _modules()


def _existing(name: str) -> str | None:
    """``name`` or its longest prefix that is a module of the package (None outside the package)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> set[str]:
    """The package modules that ``module``'s import statements name (see the module docstring)."""
    path, is_package = MODULES[module]
    found: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {_existing(a.name) for a in node.names if a.name.split(".")[0] == "visfeat"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "visfeat":
                continue
            for alias in node.names:
                full = f"{source}.{alias.name}"
                found.add(full if full in MODULES else _existing(source))
    found.discard(None)
    found.discard(module)
    return found  # type: ignore[return-value]


GRAPH = {m: _imports(m) for m in MODULES}


def _layers() -> list[list[str]]:
    """The layers of ``docs/architecture.md``'s ```` ```layers ```` block, bottom first: each a list of module or
    package names relative to ``visfeat`` (``__init__`` is the package root)."""
    text = DOC.read_text()
    m = re.search(r"^```layers\n(.*?)^```", text, re.M | re.S)
    assert m, f"{DOC} has no ```layers block (the layer order, bottom to top, one numbered line per layer)"
    layers = []
    for line in m[1].splitlines():
        number, _, names = line.partition(".")
        assert number.strip().isdigit(), f"bad line in the layers block of {DOC.name}: {line!r}"
        assert int(number) == len(layers) + 1, f"layers must be numbered 1, 2, ... in order: {line!r}"
        layers.append([n.strip() for n in names.split(",") if n.strip()])
    return layers


def _layer_of(module: str, layers: list[list[str]]) -> int | None:
    """The layer of ``module``: the one listing the longest prefix of its name (the root: ``__init__``)."""
    rel = "__init__" if module == "visfeat" else module.removeprefix("visfeat.")
    best, depth = None, -1
    for i, names in enumerate(layers, 1):
        for name in names:
            if (rel == name or rel.startswith(name + ".")) and name.count(".") > depth:
                best, depth = i, name.count(".")
    return best


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None when the graph has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in sorted(graph):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_the_import_resolver_sees_relative_absolute_and_lazy_imports():
    assert "visfeat.errors" in GRAPH["visfeat.units"]  # from .errors import UnitError
    assert "visfeat.vit.tokens" in GRAPH["visfeat.models.model"]  # from ..vit.tokens import ...
    assert "visfeat.render" in GRAPH["visfeat.cli.render"]  # a function-level import
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = _cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_module_has_a_layer_in_the_doc():
    layers = _layers()
    missing = sorted(m for m in MODULES if _layer_of(m, layers) is None)
    assert not missing, f"modules without a layer in {DOC.name}'s ```layers block: {missing}"


def test_no_import_goes_up_a_layer():
    layers = _layers()
    level = {m: _layer_of(m, layers) for m in MODULES}
    upward = [
        f"{m} (layer {level[m]}) imports {t} (layer {level[t]})"
        for m, targets in sorted(GRAPH.items())
        for t in sorted(targets)
        if level[m] is not None and level[t] is not None and level[t] > level[m]
    ]
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_size(module):
    path, _ = MODULES[module]
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT)} has {n} lines; split it into concepts of at most {MAX_LINES}"


def _is_reexport(node: ast.stmt) -> bool:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return True
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
        return True  # the docstring
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    return bool(targets) and all(isinstance(t, ast.Name) and t.id == "__all__" for t in targets)


@pytest.mark.parametrize("module", sorted(m for m, (_, pkg) in MODULES.items() if pkg))
def test_init_files_only_reexport(module):
    path, _ = MODULES[module]
    logic = [f"line {n.lineno}" for n in ast.parse(path.read_text()).body if not _is_reexport(n)]
    assert not logic, f"{path.relative_to(ROOT)} holds more than a docstring, imports and __all__: {logic}"
