"""A circuit as an offline HTML page and an SVG diagram, drawn by the shared templates of :mod:`visfeat.html` (so
``visfeat circuit`` and the gallery draw circuits alike), and as a PNG figure.

Weight kernels are heatmaps: red where the source excites the target, blue where it inhibits, white at zero, one
colour scale per level so kernels of one level compare directly.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..html import STATIC, Frame, data_uri, image_bytes, kernel_heatmap, render_page
from ..images import atomic_write, save_image, to_uint8
from ..units import parse_unit
from ..version import __version__
from .circuit import Circuit

_CELL = 10  # pixels per kernel tap in the heatmaps
_IMG = 112  # feature-visualization size in the diagram


@dataclass(frozen=True)
class Cell:
    """One kernel tap drawn as an SVG rectangle."""

    x: int
    y: int
    fill: str
    v: float


@dataclass(frozen=True)
class Kernel:
    """A kernel heatmap: its taps, their size in px, and where it sits (inside the diagram, for a node)."""

    w: int
    h: int
    cell: int
    cells: tuple[Cell, ...]
    x: float = 0.0
    y: float = 0.0


@dataclass(frozen=True)
class Line:
    """An edge of the diagram, red or blue by its net sign, as wide as its weight."""

    x1: float
    y1: float
    x2: float
    y2: float
    src: str
    dst: str
    colour: str
    width: float
    excite: float
    inhibit: float


@dataclass(frozen=True)
class NodeBox:
    """A node of the diagram: its picture, its gallery page (if any) and its kernel onto its strongest parent."""

    unit: str
    x: float
    y: float
    image: str | None
    href: str | None
    kernel: Kernel | None


@dataclass(frozen=True)
class EdgeRow:
    """One row of a level's table: an edge with the source's picture and page."""

    src: str
    dst: str
    excite: float
    inhibit: float
    cancellation: float | None
    image: str | None
    href: str | None
    dst_href: str | None
    kernel: Kernel


@dataclass(frozen=True)
class EdgeTable:
    """The edges from one source layer to the level above it, strongest first."""

    source: str
    target: str
    mode: str
    ops: list[str]
    rows: tuple[EdgeRow, ...]


@dataclass(frozen=True)
class CircuitView:
    """What the circuit templates draw."""

    target: str
    layers: list[str]
    model: str
    warnings: list[str]
    width: float
    height: float
    img: int
    lines: tuple[Line, ...]
    nodes: tuple[NodeBox, ...]
    tables: tuple[EdgeTable, ...]
    nmf: list
    nmf_error: float | None
    nmf_rgb: str | None
    render_note: str


def _colour(v: float, scale: float) -> str:
    t = max(-1.0, min(1.0, v / scale)) if scale > 0 else 0.0
    if t >= 0:
        g = int(round(255 * (1 - t)))
        return f"#ff{g:02x}{g:02x}"
    g = int(round(255 * (1 + t)))
    return f"#{g:02x}{g:02x}ff"


def _kernel(kernel: list[list[float]], scale: float, cell: int, x: float = 0.0, y: float = 0.0) -> Kernel:
    """A kernel's taps as SVG rectangles (position, colour, value)."""
    cells = tuple(
        Cell(j * cell, i * cell, _colour(v, scale), v) for i, row in enumerate(kernel) for j, v in enumerate(row)
    )
    return Kernel(len(kernel[0]) * cell, len(kernel) * cell, cell, cells, x, y)


def _render_note(render: dict) -> str:
    """How the node pictures were made, as the page says it ('' when the circuit has none)."""
    return f"Feature visualizations: {render.get('steps')} steps, seed {render.get('seed')}." if render else ""


def circuit_context(data: dict, images: dict[str, str], links: dict[str, str], model_name: str = "") -> CircuitView:
    """What the circuit templates draw, from :meth:`Circuit.to_dict`: node positions by level (target on top),
    edges red/blue by net sign, each node's kernel onto its strongest parent, and the per-level tables.

    ``images``/``links``: per unit, the page-relative address of its picture and of its gallery page (if any)."""
    nodes, edges = data["nodes"], data["edges"]
    levels = max(n["level"] for n in nodes) + 1
    per = [[n for n in nodes if n["level"] == lv] for lv in range(levels)]
    cols = max(len(p) for p in per)
    gap_x, gap_y = _IMG + 48, _IMG + 120
    pos = {}
    for lv, row in enumerate(per):
        offset = (cols - len(row)) * gap_x / 2 + 20
        for i, n in enumerate(row):
            pos[n["unit"]] = (offset + i * gap_x, 20 + lv * gap_y)
    level_of = {n["unit"]: n["level"] for n in nodes}
    scale: dict[int, float] = {}
    for e in edges:
        peak = max((abs(v) for row in e["kernel"] for v in row), default=0.0)
        scale[level_of[e["src"]]] = max(scale.get(level_of[e["src"]], 0.0), peak)
    k = max((max(len(e["kernel"]), len(e["kernel"][0])) for e in edges), default=1)
    cell = max(2, min(_CELL, 60 // k))
    biggest = max((abs(e["excite"]) + abs(e["inhibit"]) for e in edges), default=1.0) or 1.0
    lines = []
    for e in edges:
        (x0, y0), (x1, y1) = pos[e["src"]], pos[e["dst"]]
        net = abs(e["excite"]) + abs(e["inhibit"])
        colour = "#d62728" if e["excite"] + e["inhibit"] >= 0 else "#1f77b4"
        lines.append(
            Line(
                x0 + _IMG / 2,
                y0,
                x1 + _IMG / 2,
                y1 + _IMG + 14,
                e["src"],
                e["dst"],
                colour,
                0.5 + 5 * net / biggest,
                e["excite"],
                e["inhibit"],
            )
        )
    boxes = []
    for n in nodes:
        x, y = pos[n["unit"]]
        mine = [e for e in edges if e["src"] == n["unit"]]
        kern = None
        if mine:
            e = max(mine, key=lambda e: abs(e["excite"]) + abs(e["inhibit"]))
            kern = _kernel(e["kernel"], scale[n["level"]], cell, x + _IMG + 4, y + _IMG - len(e["kernel"]) * cell)
        boxes.append(NodeBox(n["unit"], x, y, images.get(n["unit"]), links.get(n["unit"]), kern))
    tables = []
    for lv in range(1, len(data["layers"])):
        units = {n["unit"] for n in per[lv]} if lv < levels else set()
        rows = sorted((e for e in edges if e["src"] in units), key=lambda e: -(abs(e["excite"]) + abs(e["inhibit"])))
        table_rows = tuple(
            EdgeRow(
                e["src"],
                e["dst"],
                e["excite"],
                e["inhibit"],
                e["cancellation"],
                images.get(e["src"]),
                links.get(e["src"]),
                links.get(e["dst"]),
                _kernel(e["kernel"], scale.get(lv, 0.0), cell),
            )
            for e in rows
        )
        src, dst = data["layers"][lv], data["layers"][lv - 1]
        tables.append(EdgeTable(src, dst, data["modes"][lv - 1], data["linearized"][lv - 1], table_rows))
    return CircuitView(
        target=data["target"],
        layers=data["layers"],
        model=model_name,
        warnings=data["warnings"],
        width=cols * gap_x + 40,
        height=(levels - 1) * gap_y + _IMG + 40,
        img=_IMG,
        lines=tuple(lines),
        nodes=tuple(boxes),
        tables=tuple(tables),
        nmf=data.get("nmf_top_channels", []),
        nmf_error=data.get("nmf_error"),
        nmf_rgb=_nmf_uri(data.get("nmf_rgb")),
        render_note=_render_note(data.get("render", {})),
    )


def _nmf_uri(rgb) -> str | None:
    """The NMF's spatial factors as a picture; None without one or for 1x1 kernels (nothing spatial to show)."""
    if not rgb or (len(rgb[0]) == 1 and len(rgb[0][0]) == 1):
        return None
    return data_uri(image_bytes(torch.tensor(rgb), 96, nearest=True))


def node_image_name(unit: str) -> str:
    """The file name of a node's picture (the unit string made file-system safe)."""
    return f"{parse_unit(unit).filename()}.png"


def write_circuit(circuit: Circuit, out: str | Path, model_name: str = "") -> dict[str, Path]:
    """Write ``circuit.html``, ``circuit.svg``, ``circuit.json``, ``circuit.png``, the node pictures
    (``img/UNIT.png``) and the stylesheet (``static/``), all referenced relatively, atomically."""
    out = Path(out)
    (out / "img").mkdir(parents=True, exist_ok=True)
    (out / "static").mkdir(exist_ok=True)
    atomic_write(out / "static" / "style.css", (STATIC / "style.css").read_bytes())
    images = {}
    for n in circuit.nodes:
        if n.image is not None:
            images[n.unit] = f"img/{node_image_name(n.unit)}"
            save_image(n.image, out / images[n.unit])
    data = circuit.to_dict()
    context = circuit_context(data, images, {}, model_name)
    paths = {k: out / f"circuit.{k}" for k in ("html", "svg", "json", "png")}
    frame = Frame(title=f"circuit {circuit.target}", version=__version__, css="static/style.css")
    atomic_write(paths["html"], render_page("circuit.html", frame=frame, c=context).encode())
    atomic_write(paths["svg"], render_page("circuit.svg", c=context).encode())
    circuit_figure(circuit, paths["png"])
    atomic_write(paths["json"], json.dumps(data, indent=1).encode())
    return paths


def circuit_figure(circuit: Circuit, path: str | Path, tile: int = 112) -> None:
    """A PNG of the circuit: one row per level (target on top), each contributor's picture above its kernel onto
    the node of the level above that it feeds most (red excite, blue inhibit; one colour scale per level)."""
    from PIL import Image, ImageDraw

    levels = max(n.level for n in circuit.nodes) + 1
    cols = max(len(circuit.level(i)) for i in range(levels))
    pad, label = 8, 14
    row_h = tile + label + tile + label + pad
    fig = Image.new("RGB", (cols * (tile + pad) + pad, pad + tile + label + pad + (levels - 1) * row_h), "white")
    draw = ImageDraw.Draw(fig)

    def paste(node, x, y):
        if node.image is not None:
            fig.paste(Image.fromarray(to_uint8(node.image)).resize((tile, tile), Image.BILINEAR), (x, y))
        draw.text((x, y + tile + 1), node.unit[:22], fill="black")

    target = circuit.level(0)[0]
    paste(target, (fig.width - tile) // 2, pad)
    for lv in range(1, levels):
        nodes = circuit.level(lv)
        strongest = {}
        for n in nodes:
            mine = [e for e in circuit.edges if e.src == n.unit]
            if mine:
                strongest[n.unit] = max(mine, key=lambda e: abs(e.excite) + abs(e.inhibit))
        scale = max((float(e.kernel.abs().max()) for e in strongest.values()), default=1.0)
        y = pad + tile + label + pad + (lv - 1) * row_h
        x0 = (fig.width - len(nodes) * (tile + pad) - pad) // 2 + pad
        for i, n in enumerate(nodes):
            x = x0 + i * (tile + pad)
            paste(n, x, y)
            e = strongest.get(n.unit)
            if e is not None:
                fig.paste(kernel_heatmap(e.kernel, scale, tile), (x, y + tile + label))
                draw.text((x, y + 2 * tile + label + 1), ("-> " + e.dst)[:22], fill="black")
    buf = io.BytesIO()
    fig.save(buf, format="PNG", optimize=True)
    atomic_write(path, buf.getvalue())
