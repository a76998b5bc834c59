"""A circuit as an offline HTML page and an SVG diagram, drawn by the gallery's templates (one HTML writer:
``visfeat circuit`` and ``visfeat gallery build`` draw circuits the same way), and as a PNG figure.

Weight kernels are heatmaps: red where the source excites the target, blue where it inhibits, white
at zero, one colour scale per level so kernels of one level compare directly.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from ..images import atomic_write, to_uint8
from .circuit import Circuit

_CELL = 10  # pixels per kernel tap in the heatmaps
_IMG = 112  # feature-visualization size in the diagram


def _colour(v: float, scale: float) -> str:
    t = max(-1.0, min(1.0, v / scale)) if scale > 0 else 0.0
    if t >= 0:
        g = int(round(255 * (1 - t)))
        return f"#ff{g:02x}{g:02x}"
    g = int(round(255 * (1 + t)))
    return f"#{g:02x}{g:02x}ff"


def _cells(kernel: list[list[float]], scale: float, cell: int) -> list[dict]:
    """A kernel's taps as SVG rectangles (position, colour, value)."""
    return [
        {"x": j * cell, "y": i * cell, "fill": _colour(v, scale), "v": v}
        for i, row in enumerate(kernel)
        for j, v in enumerate(row)
    ]


def circuit_context(data: dict, images: dict[str, str], links: dict[str, str], model_name: str = "") -> dict:
    """What the circuit templates draw, from :meth:`Circuit.to_dict`: node positions by level (target on top),
    edges red/blue by net sign, each node's kernel onto its strongest parent, and the per-level tables.

    ``images``/``links``: per unit, the address of its picture and of its gallery page (if any)."""
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
        lines.append(
            {
                "x1": x0 + _IMG / 2,
                "y1": y0,
                "x2": x1 + _IMG / 2,
                "y2": y1 + _IMG + 14,
                "src": e["src"],
                "dst": e["dst"],
                "colour": "#d62728" if e["excite"] + e["inhibit"] >= 0 else "#1f77b4",
                "width": 0.5 + 5 * (abs(e["excite"]) + abs(e["inhibit"])) / biggest,
                "excite": e["excite"],
                "inhibit": e["inhibit"],
            }
        )
    boxes = []
    for n in nodes:
        x, y = pos[n["unit"]]
        mine = [e for e in edges if e["src"] == n["unit"]]
        kern = None
        if mine:
            e = max(mine, key=lambda e: abs(e["excite"]) + abs(e["inhibit"]))
            kh = len(e["kernel"])
            kern = {
                "x": x + _IMG + 4,
                "y": y + _IMG - kh * cell,
                "w": len(e["kernel"][0]) * cell,
                "h": kh * cell,
                "cell": cell,
                "cells": _cells(e["kernel"], scale[n["level"]], cell),
            }
        boxes.append(
            {
                "unit": n["unit"],
                "x": x,
                "y": y,
                "image": images.get(n["unit"]),
                "href": links.get(n["unit"]),
                "kernel": kern,
            }
        )
    tables = []
    for lv in range(1, len(data["layers"])):
        units = {n["unit"] for n in per[lv]} if lv < levels else set()
        rows = sorted((e for e in edges if e["src"] in units), key=lambda e: -(abs(e["excite"]) + abs(e["inhibit"])))
        tables.append(
            {
                "source": data["layers"][lv],
                "target": data["layers"][lv - 1],
                "mode": data["modes"][lv - 1],
                "ops": data["linearized"][lv - 1],
                "rows": [
                    {
                        **e,
                        "image": images.get(e["src"]),
                        "href": links.get(e["src"]),
                        "dst_href": links.get(e["dst"]),
                        "w": len(e["kernel"][0]) * cell,
                        "h": len(e["kernel"]) * cell,
                        "cell": cell,
                        "cells": _cells(e["kernel"], scale.get(lv, 0.0), cell),
                    }
                    for e in rows
                ],
            }
        )
    return {
        "target": data["target"],
        "layers": data["layers"],
        "model": model_name,
        "warnings": data["warnings"],
        "width": cols * gap_x + 40,
        "height": (levels - 1) * gap_y + _IMG + 40,
        "img": _IMG,
        "lines": lines,
        "nodes": boxes,
        "tables": tables,
        "nmf": data.get("nmf_top_channels", []),
        "nmf_error": data.get("nmf_error"),
        "nmf_rgb": _nmf_uri(data.get("nmf_rgb")),
        "render": data.get("render", {}),
    }


def _nmf_uri(rgb) -> str | None:
    """The NMF's spatial factors as a picture; None without one or for 1x1 kernels (nothing spatial to show)."""
    if not rgb or (len(rgb[0]) == 1 and len(rgb[0][0]) == 1):
        return None
    from ..gallery.site import data_uri, image_bytes

    return data_uri(image_bytes(torch.tensor(rgb), 96, nearest=True))


def write_circuit(circuit: Circuit, out: str | Path, model_name: str = "") -> dict[str, Path]:
    """Write ``circuit.html``, ``circuit.svg``, ``circuit.json``, ``circuit.png``, the node pictures
    (``img/UNIT.png``) and the stylesheet (``static/``), all referenced relatively, atomically."""
    import json

    from ..gallery.site import STATIC, render_page
    from ..images import save_image
    from ..units import parse_unit

    out = Path(out)
    (out / "img").mkdir(parents=True, exist_ok=True)
    (out / "static").mkdir(exist_ok=True)
    atomic_write(out / "static" / "style.css", (STATIC / "style.css").read_bytes())
    images = {}
    for n in circuit.nodes:
        if n.image is not None:
            images[n.unit] = f"img/{parse_unit(n.unit).filename()}.png"
            save_image(n.image, out / images[n.unit])
    data = circuit.to_dict()
    context = circuit_context(data, images, {}, model_name)
    paths = {k: out / f"circuit.{k}" for k in ("html", "svg", "json", "png")}
    page = render_page(
        "circuit.html", root="", c=context, crumbs=[], title=f"circuit {circuit.target}", version=_version()
    )
    atomic_write(paths["html"], page.encode())
    atomic_write(paths["svg"], render_page("circuit.svg", c=context).encode())
    circuit_figure(circuit, paths["png"])
    atomic_write(paths["json"], json.dumps(data, indent=1).encode())
    return paths


def _version() -> str:
    from .. import __version__

    return __version__


def circuit_figure(circuit: Circuit, path: str | Path, tile: int = 112) -> None:
    """A PNG of the circuit: one row per level (target on top), each contributor's picture above its kernel onto
    the node of the level above that it feeds most (red excite, blue inhibit; one colour scale per level)."""
    from PIL import Image, ImageDraw

    from ..gallery.site import kernel_heatmap

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
