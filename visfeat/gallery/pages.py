"""Page contexts from the stored results: what each unit wants (its pictures), sees (dataset examples,
histogram) and how it is built (expanded weights from the previous built layer, to the next one and to
the classes), then every page written through :mod:`visfeat.gallery.site`'s templates."""

from __future__ import annotations

import json
import posixpath
import shutil
from collections import Counter
from pathlib import Path

import torch

from .. import __version__
from .jobs import Context, examples_of, load_weights, neighbours
from .plan import Plan, Section
from .site import (
    EXAMPLE,
    STATIC,
    THUMB,
    command,
    heat_image,
    histogram_svg_data,
    image_bytes,
    kernel_image,
    manifest_json,
    render_page,
    units_js,
    write_if_changed,
)

TOP_LINKS = 4  # excitatory and inhibitory neighbours shown per direction


class _Writer:
    """Writes site files, counting what changed; remembers every file it wrote (stale ones are removed)."""

    def __init__(self, out: Path):
        self.out, self.written, self.kept = out, 0, set()

    def bytes(self, rel: str, data: bytes) -> str:
        self.kept.add(rel)
        self.written += write_if_changed(self.out / rel, data)
        return rel

    def text(self, rel: str, text: str) -> str:
        return self.bytes(rel, text.encode())

    def derived(self, rel: str, make, source: Path | None = None) -> str:
        """A file made from ``source`` (or from what its name encodes): made again only when missing or older
        than its source, so a rebuild does not re-encode every thumbnail and example image."""
        self.kept.add(rel)
        path = self.out / rel
        if path.is_file() and (source is None or path.stat().st_mtime >= source.stat().st_mtime):
            return rel
        self.written += write_if_changed(path, make())
        return rel


def _rel(from_page: str, to: str) -> str:
    """Relative link from the page ``from_page`` to ``to`` (both site-relative); ``""`` is the site root."""
    if not to:
        return "../" * from_page.count("/")
    return posixpath.relpath(to, posixpath.dirname(from_page) or ".")


def _records(ctx: Context, sec: Section) -> dict[str, tuple]:
    out = {}
    for job in ctx.plan.by_stage("render"):
        if job.section == sec.name:
            rec = ctx.store.record("render", job.key)
            for slug in job.slugs:
                out[slug] = (job, rec["units"][slug], rec["settings"])
    return out


def _dataset_image(w: _Writer, ctx: Context, model_dir: str, image_id: int, box=None) -> str:
    """The site path of a dataset image (or a patch of it), written once; the folder names the image set."""
    name = f"{model_dir}/_images/{ctx.plan.images_key[:8]}/{image_id}"
    name += ("" if box is None else "_" + "_".join(map(str, box))) + ".webp"

    def make() -> bytes:
        img = ctx.dataset[image_id]
        if box is not None:
            top, left, h, wd = box
            img = img[:, top : top + h, left : left + wd]
        return image_bytes(img, EXAMPLE, "WEBP")

    return w.derived(name, make)


def _label_of(labels, i: int) -> str:
    return labels[i] if labels is not None and 0 <= i < len(labels) else f"class {i}"


def _neighbour_links(weights: torch.Tensor, units, section: Section, page: str, mdir: str) -> dict:
    """Strongest excitatory and inhibitory units from ``weights [n, kh, kw]`` (one kernel per unit of
    ``section``), each with its page, thumbnail and kernel picture."""
    totals = weights.flatten(1).sum(1) if weights.dim() > 1 else weights
    scale = float(weights.abs().max()) or 1.0
    order = totals.argsort(descending=True).tolist()
    pick = {
        "excite": [i for i in order if totals[i] > 0][:TOP_LINKS],
        "inhibit": [i for i in reversed(order) if totals[i] < 0][:TOP_LINKS],
    }
    out = {}
    for kind, idx in pick.items():
        out[kind] = [
            {
                "name": units[i].name,
                "href": _rel(page, f"{mdir}/{section.name}/{units[i].slug}.html"),
                "thumb": _rel(page, f"{mdir}/{section.name}/img/{units[i].slug}_t.webp"),
                "weight": float(totals[i]),
                "kernel": kernel_image(weights[i], scale) if weights.dim() == 3 else None,
            }
            for i in idx
        ]
    return out


def _classes(w: torch.Tensor, labels, n: int = 5) -> dict:
    """Classes a unit promotes and inhibits most, from its summed expanded weights to the logits [classes]."""
    top, bottom = w.topk(min(n, len(w))), (-w).topk(min(n, len(w)))
    return {
        "promote": [
            {"name": _label_of(labels, int(i)), "weight": float(v)}
            for v, i in zip(top.values, top.indices, strict=True)
            if v > 0
        ],
        "inhibit": [
            {"name": _label_of(labels, int(i)), "weight": -float(v)}
            for v, i in zip(bottom.values, bottom.indices, strict=True)
            if v > 0
        ],
    }


TOKEN_WEIGHTS = (
    "not computed for token layers: expanded weights need a path of linear ops, and attention's softmax mixes "
    "tokens nonlinearly"
)


def _wants(ctx: Context, w: _Writer, job, u, page: str, base: str, settings) -> dict:
    """The unit's pictures (copied from the store) and a thumbnail: full size, diverse, negative; ``files`` holds
    their site-relative paths (the manifest's), the other keys the page-relative links."""
    from PIL import Image

    def copy(name: str) -> str:
        return w.bytes(f"{base}{name}.png", ctx.store.file("render", job.key, f"{u.slug}{name}.png").read_bytes())

    source = ctx.store.file("render", job.key, f"{u.slug}.png")

    def thumbnail() -> bytes:
        with Image.open(source) as im:
            return image_bytes(im, THUMB, "WEBP")

    files = {
        "page": page,
        "image": copy(""),
        "thumbnail": w.derived(f"{base}_t.webp", thumbnail, source),
        "diverse": [copy(f"_d{j}") for j in range(settings.diverse)],
    }
    if settings.negative:
        files["negative"] = copy("_neg")
    return {
        "files": files,
        "fv": _rel(page, files["image"]),
        "thumb": _rel(page, files["thumbnail"]),
        "diverse": [_rel(page, d) for d in files["diverse"]],
        "neg": _rel(page, files["negative"]) if settings.negative else None,
    }


def _sees(ctx: Context, w: _Writer, ex, u, page: str, held: float) -> dict:
    """Top images with heatmaps and predicted classes, top patches, lower quantiles, the histogram, the ratio."""
    mdir, labels = ctx.plan.slug, ctx.model.labels
    tops, patches = ex.top_images(u.index), ex.top_patches(u.index)
    best = tops[0]["value"] if tops else None
    vmax = max((p["value"] for p in patches), default=0.0)
    examples = []
    for j, t in enumerate(tops):
        heat = ex.heatmap(u.index, j, "img")
        examples.append(
            {
                "src": _rel(page, _dataset_image(w, ctx, mdir, t["id"])),
                "value": t["value"],
                "heat": heat_image(heat, vmax) if heat.dim() == 2 else None,
                "pred": _pred(ex, t["id"], labels),
            }
        )
    counts, edges = ex.histogram(u.index)
    ratio = held / best if best and best > 0 else None
    return {
        "examples": examples,
        "patches": [
            {"src": _rel(page, _dataset_image(w, ctx, mdir, p["id"], p["box"])), "value": p["value"]} for p in patches
        ],
        "quantiles": [
            {"src": _rel(page, _dataset_image(w, ctx, mdir, q["id"])), "value": q["value"], "q": q["quantile"]}
            for q in ex.quantile_images(u.index)
        ],
        "hist": histogram_svg_data(counts, edges, [m for m in (best, held) if m is not None]),
        "best": best,
        "ratio": ratio,
        "flag": ratio is not None and ratio < 1,
        "images_seen": ex.topk.images_seen,
        "preds": Counter(e["pred"].rsplit(" ", 1)[0] for e in examples if e["pred"]).most_common(3),
    }


def _built(ctx: Context, sec: Section, around: tuple, weights: dict, pos: int, u, page: str) -> dict:
    """Links to the strongest units of the previous and next built layers (``around``), and the classes (the last
    layer)."""
    plan, model = ctx.plan, ctx.model
    prev, nxt = around
    mine, meta = weights.get(sec.name, ({}, {}))
    out = {
        "from": None,
        "feeds": None,
        "classes": None,
        "from_layer": prev.name if prev else None,
        "feeds_layer": nxt.name if nxt else None,
        "circuits": [],
        "from_error": TOKEN_WEIGHTS if sec.kind == "token" else meta.get("prev_error") or meta.get("next_error"),
    }
    if "from" in mine and prev is not None:
        out["from"] = _neighbour_links(
            mine["from"][pos][[x.index for x in prev.units]], prev.units, prev, page, plan.slug
        )
    if nxt is not None:  # a channel's feeds are the next section's weights from this layer; latents store their own
        feeds = weights.get(nxt.name, ({}, {}))[0].get("from") if sec.kind == "channel" else mine.get("feeds")
        if feeds is not None:
            column = feeds[:, pos if sec.kind == "latent" else u.index]  # [next units, kh, kw]
            out["feeds"] = _neighbour_links(column, nxt.units, nxt, page, plan.slug)
    if "classes" in mine and model.labels is not None:
        out["classes"] = _classes(mine["classes"][:, pos], model.labels)
    return out


def unit_views(ctx: Context, w: _Writer) -> dict[str, list[dict]]:
    """Every unit's page context, by section (images written as a side effect)."""
    plan = ctx.plan
    weights = {j.section: load_weights(ctx.store, j) for j in plan.by_stage("weights")}
    views: dict[str, list[dict]] = {}
    for sec in plan.sections:
        ex = examples_of(ctx, sec)
        records = _records(ctx, sec)
        around = neighbours(plan, ctx.model, sec)[:2] if sec.kind != "class" else (None, None)
        out = []
        for pos, u in enumerate(sec.units):
            page = f"{plan.slug}/{sec.name}/{u.slug}.html"
            job, rec, settings = records[u.slug]
            view = {
                "slug": u.slug,
                "unit": u.unit,
                "name": u.name,
                "index": u.index,
                "page": page,
                "final": rec["final"],
                "held_out": rec["held_out"],
                "negative": rec.get("negative"),
                "command": command(plan, sec, job, u.unit),
                "settings": settings,
                "seed": job.seed,
                "prev_unit": sec.units[pos - 1].slug if pos > 0 else None,
                "next_unit": sec.units[pos + 1].slug if pos + 1 < len(sec.units) else None,
                **_wants(ctx, w, job, u, page, f"{plan.slug}/{sec.name}/img/{u.slug}", sec.settings),
                **_sees(ctx, w, ex, u, page, rec["held_out"]),
                **_built(ctx, sec, around, weights, pos, u, page),
            }
            out.append(view)
        views[sec.name] = out
    _class_sources(plan, ctx.model, weights, views)
    for sec in plan.sections:
        for v in views[sec.name]:
            v["label"] = _auto_label(v, sec)
    return views


def _class_sources(plan: Plan, model, weights: dict, views: dict) -> None:
    """Class-logit units are built from the last built layer: its summed weights to each class."""
    for sec in plan.sections:
        if sec.kind != "class":
            continue
        last = next((s for s in plan.sections if s.kind == "channel" and neighbours(plan, model, s)[2]), None)
        c = weights.get(last.name, ({}, {}))[0].get("classes") if last else None
        if c is None:
            continue
        for v in views[sec.name]:
            v["from"] = _neighbour_links(c[v["index"]], last.units, last, v["page"], plan.slug)
            v["from_layer"] = last.name


def _auto_label(view: dict, sec: Section) -> str:
    """A short automatic label: the class a unit promotes most (units near the output), else the class its top
    dataset examples are most often predicted as (class units need none: their name is the class)."""
    if sec.kind == "class":
        return ""  # its name is the class
    if view["classes"] and view["classes"]["promote"]:
        return "→ " + view["classes"]["promote"][0]["name"]
    if view["preds"]:
        name, count = view["preds"][0]
        return f"sees {name} ({count}/{len(view['examples'])})"
    return ""


def _pred(ex, image_id: int, labels) -> str | None:
    """``"class 87%"``: the model's top-1 class of a dataset image (None for a model without labels)."""
    if labels is None or ex.pred_class is None:
        return None
    cls, prob = ex.prediction(image_id)
    return f"{_label_of(labels, cls)} {prob:.0%}"


def _circuit_views(ctx: Context, w: _Writer, views: dict) -> list[dict]:
    """Circuit pages' contexts; also links each circuit from the units that appear in it."""
    from ..circuits.html import circuit_context
    from ..units import parse_unit

    plan = ctx.plan
    by_unit = {v["unit"]: (sec, v) for sec in plan.sections for v in views[sec.name]}
    out = []
    for job in plan.by_stage("circuits"):
        data = json.loads(ctx.store.file("circuits", job.key, "circuit.json").read_text())
        page = f"{plan.slug}/circuits/{job.section}.html"
        images, links = {}, {}
        for n in data["nodes"]:
            fname = parse_unit(n["unit"]).filename()
            images[n["unit"]] = _rel(
                page,
                w.bytes(
                    f"{plan.slug}/circuits/img/{job.section}/{fname}.png",
                    ctx.store.file("circuits", job.key, f"{fname}.png").read_bytes(),
                ),
            )
            hit = by_unit.get(_canonical(n["unit"], ctx.model))
            if hit is not None:
                links[n["unit"]] = _rel(page, hit[1]["page"])
                hit[1]["circuits"].append({"name": job.section, "href": _rel(hit[1]["page"], page)})
        context = circuit_context(data, images, links, plan.model_name)
        out.append({"name": job.section, "page": page, "context": context, "target": data["target"]})
    return out


def _canonical(unit: str, model) -> str:
    """A circuit node's unit string as the gallery names it (class logits by index)."""
    from ..units import parse_unit

    u = parse_unit(unit)
    if u.is_logit and isinstance(u.index, str):
        from ..imagenet import class_index

        return f"logit:{class_index(u.index, model.labels)}"
    return str(u) if not u.is_logit else f"logit:{u.index}"


def write_site(ctx: Context, out: Path) -> dict:
    """Write every page, image, script and the manifest for a finished plan; returns the manifest."""
    plan, spec = ctx.plan, ctx.plan.spec
    w = _Writer(out)
    for f in sorted(STATIC.iterdir()):
        w.bytes(f"static/{f.name}", f.read_bytes())
    views = unit_views(ctx, w)
    circuits = _circuit_views(ctx, w, views)
    saes = _sae_views(ctx, plan)
    mdir = plan.slug
    crumbs_model = [("index.html", "gallery"), (f"{mdir}/index.html", plan.model_name)]
    common = {"title": spec.title, "version": __version__}
    for sec in plan.sections:
        units = views[sec.name]
        layer_page = f"{mdir}/{sec.name}/index.html"
        grid = [
            {
                "slug": v["slug"],
                "name": v["name"],
                "label": v["label"],
                "ratio": v["ratio"],
                "held_out": v["held_out"],
                "best": v["best"],
                "index": v["index"],
                "thumb": f"img/{v['slug']}_t.webp",
                "flag": v["flag"],
            }
            for v in units
        ]
        w.bytes(f"{mdir}/{sec.name}/units.js", units_js(sec.name, grid))
        crumbs = [*crumbs_model, (layer_page, sec.name)]
        w.text(
            layer_page,
            render_page(
                "layer.html",
                root=_rel(layer_page, ""),
                section=sec,
                units=units,
                crumbs=_crumbs(layer_page, crumbs),
                sae=saes.get(sec.sae),
                **common,
            ),
        )
        for v in units:
            w.text(
                v["page"],
                render_page(
                    "unit.html",
                    root=_rel(v["page"], ""),
                    section=sec,
                    u=v,
                    crumbs=_crumbs(v["page"], [*crumbs, (v["page"], v["name"])]),
                    **common,
                ),
            )
    for c in circuits:
        page = c["page"]
        w.text(
            page,
            render_page(
                "circuit.html",
                root=_rel(page, ""),
                c=c["context"],
                crumbs=_crumbs(page, [*crumbs_model, (page, "circuit " + c["name"])]),
                **common,
            ),
        )
    model_page = f"{mdir}/index.html"
    samples = {s.name: views[s.name][:8] for s in plan.sections}
    w.text(
        model_page,
        render_page(
            "model.html",
            root=_rel(model_page, ""),
            plan=plan,
            samples=samples,
            circuits=circuits,
            saes=saes,
            crumbs=_crumbs(model_page, crumbs_model),
            **common,
        ),
    )
    manifest = _manifest(plan, views, circuits, saes)
    w.bytes("manifest.json", manifest_json(manifest))
    w.text("spec.toml", spec.text)
    totals = {"units": sum(len(v) for v in views.values()), "sections": len(plan.sections), "circuits": len(circuits)}
    w.text(
        "index.html",
        render_page(
            "index.html",
            root="",
            plan=plan,
            totals=totals,
            spec_text=spec.text,
            cover=[f"{mdir}/{s.name}/img/{views[s.name][0]['slug']}_t.webp" for s in plan.sections if views[s.name]][
                :6
            ],
            crumbs=_crumbs("index.html", crumbs_model[:1]),
            **common,
        ),
    )
    _remove_stale(out, w.kept)
    return {"manifest": manifest, "written": w.written, "files": len(w.kept)}


def _crumbs(page: str, trail: list[tuple[str, str]]) -> list[dict]:
    return [{"href": _rel(page, href), "text": text} for href, text in trail]


def _sae_views(ctx: Context, plan: Plan) -> dict:
    out = {}
    for job in plan.by_stage("sae"):
        rec = ctx.store.record("sae", job.key)
        out[job.extra["name"]] = {
            "name": job.extra["name"],
            "layer": job.extra["layer"],
            "metrics": rec["metrics"],
            "config": rec["config"],
            "trained": job.extra["train"] is not None,
        }
    return out


def _manifest(plan: Plan, views: dict, circuits: list, saes: dict) -> dict:
    """The bulk export: every unit with its files, metrics and the recipe that made it."""
    keep = ("unit", "name", "label", "index", "held_out", "best", "ratio", "final", "negative", "seed", "command")
    sections = []
    for sec in plan.sections:
        units = []
        for v in views[sec.name]:
            units.append(
                {
                    **{k: v[k] for k in keep},
                    "files": v["files"],
                    "settings": v["settings"],
                    "top_examples": [e["value"] for e in v["examples"]],
                }
            )
        sections.append(
            {
                "name": sec.name,
                "layer": sec.layer,
                "kind": sec.kind,
                "units": units,
                "render": sec.settings.recipe(),
                "sae": sec.sae,
            }
        )
    return {
        "title": plan.spec.title,
        "visfeat": __version__,
        "model": plan.model_name,
        "fingerprint": plan.fingerprint,
        "images": {"folder": plan.spec.images, "n": plan.spec.n_images, "k": plan.spec.k},
        "sections": sections,
        "circuits": [{"name": c["name"], "page": c["page"], "target": c["target"]} for c in circuits],
        "saes": list(saes.values()),
    }


def _remove_stale(out: Path, kept: set[str]) -> None:
    """Delete site files that this build did not write (a unit removed from the spec), never the cache."""
    for path in sorted(out.rglob("*"), reverse=True):
        rel = path.relative_to(out).as_posix()
        if rel.startswith(".visfeat") or rel in kept:
            continue
        if path.is_file():
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            shutil.rmtree(path, ignore_errors=True)


__all__ = ["unit_views", "write_site"]
