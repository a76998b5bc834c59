"""The site: static pages from the stored results, through Jinja2 templates with autoescaping (package data).

``write_site`` turns a finished plan into ``SITE/index.html`` → ``MODEL/index.html`` → ``MODEL/LAYER/index.html``
→ ``MODEL/LAYER/UNIT.html``, the circuit and SAE pages, ``manifest.json`` and per-layer ``units.js`` files
(a browser refuses ``fetch()`` on ``file://``, so page data travels as scripts). Relative links only, no
network: it opens from disk. A file is rewritten only when its bytes change, so a rebuild is cheap.
"""

from __future__ import annotations

import base64
import io
import json
import shlex
from functools import cache
from pathlib import Path

import torch

from ..images import atomic_write, to_uint8
from .store import CACHE

HERE = Path(__file__).parent
STATIC = HERE / "static"
THUMB = 128  # grid and link thumbnails (px)
EXAMPLE = 112  # dataset example tiles (px)
HEAT = 28  # largest heatmap side (positions) drawn over an example


@cache
def environment():
    """The Jinja2 environment: templates from the package, autoescape on for HTML and SVG."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=jinja2.select_autoescape(["html", "svg"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = lambda v, digits=3: "–" if v is None else f"{v:.{digits}g}"
    return env


def render_page(template: str, **context) -> str:
    """One page from a template (the only place visfeat writes HTML)."""
    return environment().get_template(template).render(**context)


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write atomically unless the file already holds these bytes; True when written."""
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)
    return True


def image_bytes(
    image: torch.Tensor | object, size: int | None = None, fmt: str = "PNG", nearest: bool = False
) -> bytes:
    """Encode a [3, H, W] tensor in [0, 1] (or a PIL image) as PNG or WebP, optionally resized to ``size`` wide."""
    from PIL import Image

    im = Image.fromarray(to_uint8(image)) if torch.is_tensor(image) else image
    if size and im.width != size:
        im = im.resize((size, max(1, round(im.height * size / im.width))), Image.NEAREST if nearest else Image.LANCZOS)
    buf = io.BytesIO()
    if fmt == "WEBP":
        im.save(buf, format="WEBP", quality=85, method=4)
    else:
        im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def kernel_heatmap(kernel: torch.Tensor, scale: float, width: int):
    """A weight kernel ``[kh, kw]`` as a PIL image ``width`` px wide (nearest): red excites, blue inhibits, white is
    zero, ``scale`` = full colour. The one kernel picture of the gallery's pages and of circuit figures."""
    from PIL import Image

    t = (kernel.float() / scale).clamp(-1, 1) if scale > 0 else torch.zeros_like(kernel.float())
    pos, neg = t.clamp_min(0), (-t).clamp_min(0)
    rgb = torch.stack([1 - neg, 1 - pos - neg, 1 - pos]).clamp(0, 1)
    kh, kw = kernel.shape
    return Image.fromarray(to_uint8(rgb)).resize((width, width * kh // max(1, kw)), Image.NEAREST)


def kernel_image(kernel: torch.Tensor, scale: float, width: int = 48) -> str:
    """A weight kernel as a small PNG data URI, whole pixels per tap (about ``width`` px wide)."""
    kw = kernel.shape[1]
    return data_uri(image_bytes(kernel_heatmap(kernel, scale, kw * max(1, width // kw))))


def heat_image(heat: torch.Tensor, vmax: float) -> str:
    """An activation map as a translucent PNG data URI laid over its image: dark where the unit is silent, clear
    where it fires most (the image shows through where the unit looks)."""
    from PIL import Image

    heat = heat.float()
    if max(heat.shape) > HEAT:  # a 112x112 map shows no more than a 28x28 one at 112 px, and costs 16x the bytes
        heat = torch.nn.functional.adaptive_avg_pool2d(heat[None, None], HEAT)[0, 0]
    t = (heat / vmax).clamp(0, 1) if vmax > 0 else torch.zeros_like(heat)
    z = torch.zeros_like(t)
    rgba = torch.stack([z, z, z + 0.05, 0.72 * (1 - t)])
    arr = (rgba.permute(1, 2, 0) * 255).round().byte().numpy()
    return data_uri(image_bytes(Image.fromarray(arr, "RGBA")))


def histogram_svg_data(counts: list[int], edges: list[float], marks: list[float], width=320, height=90) -> dict:
    """Bars and markers of a histogram in SVG coordinates (drawn by the unit template)."""
    top = max(counts) or 1
    lo, hi = edges[0], edges[-1]
    span = (hi - lo) or 1.0
    bw = width / max(1, len(counts))
    bars = [
        {
            "x": round(i * bw, 2),
            "w": round(bw - 1, 2),
            "h": round(height * c / top, 2),
            "y": round(height - height * c / top, 2),
            "c": c,
            "lo": edges[i],
            "hi": edges[i + 1],
        }
        for i, c in enumerate(counts)
    ]
    ticks = [
        {"x": round(width * min(1.0, max(0.0, (m - lo) / span)), 2), "v": m, "out": not lo <= m <= hi} for m in marks
    ]
    return {"bars": bars, "marks": ticks, "width": width, "height": height, "lo": lo, "hi": hi}


def command(plan, section, job, unit_text: str) -> str:
    """The command that re-renders this unit's batch exactly, with its seed and settings (run from the site's
    folder for SAE latents, whose SAE file lives in the site's cache)."""
    r = section.settings
    first = next(i for i, u in enumerate(section.units) if u.slug == job.slugs[0])
    batch = section.units[first : first + len(job.slugs)]
    spec = plan.spec
    idx = [u.index for u in batch]
    ids = f"{idx[0]}-{idx[-1]}" if len(idx) > 1 and idx == list(range(idx[0], idx[-1] + 1)) else ",".join(map(str, idx))
    if section.kind == "latent":
        sae = next(j for j in plan.by_stage("sae") if j.extra["name"] == section.sae)
        parts = ["visfeat", "sae", "inspect", f"{CACHE}/sae/{sae.key}/sae.safetensors", "--render", ids]
        parts += ["--reduce", "mean", "--model", spec.model] + (["--weights", spec.weights] if spec.weights else [])
    else:
        parts = ["visfeat", "render", spec.model] + (["--weights", spec.weights] if spec.weights else [])
        if section.kind == "class":
            parts += [u.unit for u in batch]
        else:
            at = batch[0].unit.partition("@")[2]
            parts.append(f"{section.layer}:{ids}" + (f"@{at}" if at else ""))
        parts += ["--batch-size", str(len(batch))] + ([] if r.preact else ["--no-preact"])
        parts += ["--amp", r.amp] if r.amp else []
    parts += ["--steps", str(r.steps), "--lr", f"{r.lr:g}", "--views", str(r.views), "--lr-schedule", r.lr_schedule]
    parts += ["--seed", str(job.seed), "-o", "out/rerender"]
    return " ".join(shlex.quote(p) for p in parts) + f"   # {unit_text} is one of this batch"


def manifest_json(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=1, sort_keys=False) + "\n").encode()


def units_js(section_name: str, units: list[dict]) -> bytes:
    """The per-layer data script: ``VF_UNITS`` for the grid (filter, sort); ``<`` escaped for safety."""
    blob = json.dumps({"section": section_name, "units": units}, separators=(",", ":")).replace("<", "\\u003c")
    return f"window.VF_UNITS = {blob};\n".encode()
