"""A circuit as a self-contained HTML page and an SVG diagram (images inlined; no scripts, works offline).

Weight kernels are heatmaps: red where the source excites the target, blue where it inhibits, white
at zero, one colour scale per level so kernels of one level compare directly.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import torch

from ..images import atomic_write, to_uint8
from .circuit import Circuit, Edge

_CELL = 10  # pixels per kernel tap in the heatmaps
_IMG = 112  # feature-visualization size in the diagram


def png_data_uri(image: torch.Tensor, size: int | None = None, nearest: bool = False) -> str:
    """``data:image/png;base64,...`` of a [3, H, W] image in [0, 1], optionally resized."""
    from PIL import Image

    im = Image.fromarray(to_uint8(image))
    if size:
        im = im.resize((size, size), Image.NEAREST if nearest else Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _colour(v: float, scale: float) -> str:
    t = max(-1.0, min(1.0, v / scale)) if scale > 0 else 0.0
    if t >= 0:
        g = int(round(255 * (1 - t)))
        return f"#ff{g:02x}{g:02x}"
    g = int(round(255 * (1 + t)))
    return f"#{g:02x}{g:02x}ff"


def kernel_svg(kernel: torch.Tensor, scale: float, x: float = 0, y: float = 0, cell: int = _CELL) -> str:
    """SVG rects of a [kh, kw] kernel at (x, y): red excite, blue inhibit, ``scale`` = full colour."""
    kh, kw = kernel.shape
    parts = [f'<g transform="translate({x:.1f},{y:.1f})">']
    for i in range(kh):
        for j in range(kw):
            v = float(kernel[i, j])
            parts.append(
                f'<rect x="{j * cell}" y="{i * cell}" width="{cell}" height="{cell}" fill="{_colour(v, scale)}">'
                f"<title>{v:+.4g}</title></rect>"
            )
    parts.append(f'<rect x="0" y="0" width="{kw * cell}" height="{kh * cell}" fill="none" stroke="#888"/></g>')
    return "".join(parts)


def _scales(circuit: Circuit) -> dict[str, float]:
    """Colour scale per destination level: the largest |tap| over that level's edges."""
    level_of = {n.unit: n.level for n in circuit.nodes}
    out: dict[int, float] = {}
    for e in circuit.edges:
        lv = level_of[e.src]
        out[lv] = max(out.get(lv, 0.0), float(e.kernel.abs().max()))
    return {e.src + "->" + e.dst: out[level_of[e.src]] for e in circuit.edges}


def _cell_size(edges: list[Edge]) -> int:
    k = max((max(e.kernel.shape) for e in edges), default=1)
    return max(2, min(_CELL, 60 // k))


def _inline(node) -> str:
    return png_data_uri(node.image)


def circuit_svg(circuit: Circuit, href=_inline) -> str:
    """The circuit as one SVG: nodes by level (target on top) with their pictures, edges red/blue by net sign.

    ``href(node)`` gives each picture's address (default: inlined as a data URI)."""
    levels = max(n.level for n in circuit.nodes) + 1
    per = [circuit.level(i) for i in range(levels)]
    cols = max(len(p) for p in per)
    gap_x, gap_y = _IMG + 48, _IMG + 120
    width, height = cols * gap_x + 40, levels * gap_y + 20
    pos = {}
    for lv, nodes in enumerate(per):
        offset = (cols - len(nodes)) * gap_x / 2 + 20
        for i, n in enumerate(nodes):
            pos[n.unit] = (offset + i * gap_x, 20 + lv * gap_y)
    scales = _scales(circuit)
    cell = _cell_size(circuit.edges)
    biggest = max((abs(e.excite) + abs(e.inhibit) for e in circuit.edges), default=1.0) or 1.0
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
    ]
    for e in circuit.edges:
        (x0, y0), (x1, y1) = pos[e.src], pos[e.dst]
        net = e.excite + e.inhibit
        colour = "#d62728" if net >= 0 else "#1f77b4"
        w = 0.5 + 5 * (abs(e.excite) + abs(e.inhibit)) / biggest
        out.append(
            f'<line x1="{x0 + _IMG / 2:.1f}" y1="{y0:.1f}" x2="{x1 + _IMG / 2:.1f}" y2="{y1 + _IMG + 14:.1f}" '
            f'stroke="{colour}" stroke-width="{w:.2f}" stroke-opacity="0.55"><title>{html.escape(e.src)} -> '
            f"{html.escape(e.dst)}: +{e.excite:.3g} / {e.inhibit:.3g}</title></line>"
        )
    for n in circuit.nodes:
        x, y = pos[n.unit]
        if n.image is not None:
            out.append(f'<image x="{x:.1f}" y="{y:.1f}" width="{_IMG}" height="{_IMG}" href="{href(n)}"/>')
        else:
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{_IMG}" height="{_IMG}" fill="#eee"/>')
        out.append(
            f'<text x="{x + _IMG / 2:.1f}" y="{y + _IMG + 12:.1f}" text-anchor="middle">{html.escape(n.unit)}</text>'
        )
    # each node's kernel onto its strongest parent, beside the node
    for n in circuit.nodes:
        mine = [e for e in circuit.edges if e.src == n.unit]
        if not mine:
            continue
        e = max(mine, key=lambda e: abs(e.excite) + abs(e.inhibit))
        x, y = pos[n.unit]
        kh, kw = e.kernel.shape
        out.append(kernel_svg(e.kernel, scales[e.src + "->" + e.dst], x + _IMG + 4, y + _IMG - kh * cell, cell))
    out.append("</svg>")
    return "\n".join(out)


_STYLE = """
body{font-family:sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:20px} h2{font-size:16px;margin-top:28px}
.note{color:#555;font-size:13px} .warn{color:#a33;font-size:13px}
table{border-collapse:collapse;font-size:12px} td,th{padding:4px 8px;border-bottom:1px solid #ddd;vertical-align:middle}
img.fv{width:96px;height:96px} img.nmf{width:96px;height:96px;image-rendering:pixelated}
"""


def circuit_html(circuit: Circuit, model_name: str = "", href=_inline) -> str:
    """The full page: diagram, how the weights were computed, every edge with its kernel, the NMF."""
    e = html.escape
    scales = _scales(circuit)
    cell = _cell_size(circuit.edges)
    nodes = {n.unit: n for n in circuit.nodes}
    rows = []
    for lv in range(1, len(circuit.layers)):
        mode = circuit.modes[lv - 1]
        ops = circuit.linearized[lv - 1]
        how = (
            "exact: every op between the layers is linear"
            if mode == "exact"
            else "linearized: "
            + "; ".join(e(o) for o in ops[:12])
            + (f" and {len(ops) - 12} more" if len(ops) > 12 else "")
        )
        rows.append(f"<h2>{e(circuit.layers[lv])} &rarr; {e(circuit.layers[lv - 1])}</h2><p class='note'>{how}</p>")
        rows.append(
            "<table><tr><th>source</th><th></th><th>target</th><th>kernel</th><th>excite</th>"
            "<th>inhibit</th><th>cancellation</th></tr>"
        )
        level_units = {n.unit for n in circuit.level(lv)}
        for ed in sorted(
            (x for x in circuit.edges if x.src in level_units), key=lambda x: -(abs(x.excite) + abs(x.inhibit))
        ):
            kh, kw = ed.kernel.shape
            svg = (
                f'<svg xmlns="http://www.w3.org/2000/svg" width="{kw * cell}" height="{kh * cell}">'
                f"{kernel_svg(ed.kernel, scales[ed.src + '->' + ed.dst], 0, 0, cell)}</svg>"
            )
            node = nodes[ed.src]
            pic = f'<img class="fv" src="{href(node)}">' if node.image is not None else ""
            canc = "" if ed.cancellation is None else f"{ed.cancellation:.2f}"
            rows.append(
                f"<tr><td>{pic}</td><td>{e(ed.src)}</td><td>{e(ed.dst)}</td><td>{svg}</td>"
                f"<td>{ed.excite:+.4g}</td><td>{ed.inhibit:+.4g}</td><td>{canc}</td></tr>"
            )
        rows.append("</table>")
    nmf = ""
    if circuit.nmf is not None:
        tops = []
        for i, colour in enumerate(("red", "green", "blue")):
            chans = ", ".join(f"{s}{c}" for c, s, _ in circuit.nmf.top_channels(i, 4))
            tops.append(f"<li>{colour}: {e(chans)}</li>")
        nmf = (
            f"<h2>NMF of the target's weights from {e(circuit.layers[1])} (3 factors as RGB)</h2>"
            f'<img class="nmf" src="{png_data_uri(circuit.nmf.rgb(), 96, nearest=True)}">'
            f"<ul class='note'>{''.join(tops)}</ul><p class='note'>relative error "
            f"{circuit.nmf.relative_error:.3f}; '+' is a channel's excitatory part, '-' its inhibitory part</p>"
        )
    warn = "".join(f"<p class='warn'>warning: {e(w)}</p>" for w in circuit.warnings)
    settings = circuit.render_settings
    fv = f"feature visualizations: {settings.get('steps')} steps, seed {settings.get('seed')}" if settings else ""
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>circuit {e(circuit.target)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{e(model_name)} {e(circuit.target)} &larr; "
        f"{' &larr; '.join(e(s) for s in circuit.layers[1:])}</h1>"
        f"<p class='note'>Kernels: red = excite, blue = inhibit (hover a cell for its value). {fv}</p>{warn}"
        f"{circuit_svg(circuit, href)}{''.join(rows)}{nmf}</body></html>"
    )


def write_circuit(circuit: Circuit, out: str | Path, model_name: str = "") -> dict[str, Path]:
    """Write ``circuit.html``, ``circuit.svg``, ``circuit.json``, ``circuit.png`` and the node pictures
    (``img/UNIT.png``, referenced relatively) into ``out``, atomically."""
    import json

    from ..images import save_image
    from ..units import parse_unit

    out = Path(out)
    (out / "img").mkdir(parents=True, exist_ok=True)
    names = {}
    for n in circuit.nodes:
        if n.image is not None:
            names[n.unit] = f"img/{parse_unit(n.unit).filename()}.png"
            save_image(n.image, out / names[n.unit])

    def href(node) -> str:
        return names[node.unit]

    paths = {k: out / f"circuit.{k}" for k in ("html", "svg", "json", "png")}
    atomic_write(paths["html"], circuit_html(circuit, model_name, href).encode())
    atomic_write(paths["svg"], circuit_svg(circuit, href).encode())
    circuit_figure(circuit, paths["png"])
    atomic_write(paths["json"], json.dumps(circuit.to_dict(), indent=1).encode())
    return paths


def _heatmap(kernel: torch.Tensor, scale: float, size: int):
    from PIL import Image

    t = (kernel / scale).clamp(-1, 1) if scale > 0 else torch.zeros_like(kernel)
    pos, neg = t.clamp_min(0), (-t).clamp_min(0)
    rgb = torch.stack([1 - neg, 1 - pos - neg, 1 - pos]).clamp(0, 1)  # white -> red (+) / blue (-)
    im = Image.fromarray(to_uint8(rgb))
    return im.resize((size, size * kernel.shape[0] // max(1, kernel.shape[1])), Image.NEAREST)


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
                fig.paste(_heatmap(e.kernel, scale, tile), (x, y + tile + label))
                draw.text((x, y + 2 * tile + label + 1), ("-> " + e.dst)[:22], fill="black")
    buf = io.BytesIO()
    fig.save(buf, format="PNG", optimize=True)
    atomic_write(path, buf.getvalue())
