"""The build plan: a spec resolved against its model into sections (a layer's units, or an SAE's latents) and
jobs, each keyed by the hash of its recipe (model fingerprint, units, settings, seed, image set).

Nothing here computes results: :func:`make_plan` validates every layer, unit, class and SAE of the spec
against the model's catalogue (errors name the key, the line and the fix) and lists the jobs that
:mod:`visfeat.gallery.jobs` runs. A job whose key the store already holds is not run again.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace

import torch

from .. import __version__
from ..errors import VisfeatError, unknown
from ..hooks import LOGITS
from .spec import GallerySpec, LayerSpec, RenderSettings, SAESpec, spec_error
from .store import recipe_key

#: Stages in the order a build runs them (SAEs before the examples pass, which encodes their latents).
STAGES = ("sae", "examples", "render", "weights", "circuits")


@dataclass(frozen=True)
class GUnit:
    """One unit of the gallery: its page is ``MODEL/SECTION/SLUG.html``."""

    slug: str  # file stem inside its section, e.g. "12" or "967"
    unit: str  # unit string: blocks.4:12, logit:967, blocks.9.mlp.act:3@mean, blocks.5/NAME:3
    index: int  # channel, class or latent index (the row of its dataset examples)
    name: str  # shown: blocks.4:12, espresso, latent 3


@dataclass(frozen=True)
class Section:
    """What one layer page shows: a model layer's units, or one SAE's latents."""

    name: str  # folder name: the layer name, or sae-NAME
    layer: str  # the model layer the units live on ("logits" for classes)
    kind: str  # channel | class | token | latent
    units: tuple[GUnit, ...]
    settings: RenderSettings
    tokens: str = "all"  # which tokens the dataset examples read on token layers
    sae: str | None = None


@dataclass(frozen=True)
class Job:
    """One unit of work: ``stage``, its store key, and what it needs (a section name, unit slugs, ...)."""

    stage: str
    key: str
    section: str = ""
    slugs: tuple[str, ...] = ()
    seed: int = 0
    extra: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def size(self) -> int:
        """Units this job produces (for progress and counts)."""
        return max(1, len(self.slugs))


@dataclass
class Plan:
    """Sections and jobs of a spec for one model; ``fingerprint`` identifies the model's weights."""

    spec: GallerySpec
    model_name: str
    slug: str  # the model's folder in the site
    fingerprint: str
    images_key: str
    sections: list[Section]
    jobs: list[Job]

    def section(self, name: str) -> Section:
        return next(s for s in self.sections if s.name == name)

    def by_stage(self, stage: str) -> list[Job]:
        return [j for j in self.jobs if j.stage == stage]

    def describe(self) -> str:
        """The plan as text: units per section, jobs per stage."""
        rows = [f"{self.spec.title}: model {self.model_name} (weights {self.fingerprint[:8]})"]
        for s in self.sections:
            r = s.settings
            rows.append(
                f"  {s.name:<24} {len(s.units):>5} {s.kind} units  steps {r.steps}, views {r.views}, "
                f"{r.lr_schedule}, +{r.diverse} diverse{', negative' if r.negative else ''}, batch {r.batch_size}"
            )
        for stage in STAGES:
            jobs = self.by_stage(stage)
            if jobs:
                rows.append(f"  stage {stage:<9} {len(jobs):>4} jobs, {sum(j.size for j in jobs)} units")
        return "\n".join(rows)


def fingerprint(model) -> str:
    """Hash of the model's name, parameters and buffers: a different checkpoint is a different recipe."""
    h = hashlib.sha256(model.name.encode())
    for name, t in model.module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def _indices(spec: GallerySpec, where: tuple, value, count: int, labels=None) -> list[int]:
    """Expand a units value (``"all"``, ``"0-31"``, ``"1,3,7-9"``, an int, a list, class names) into indices."""
    from ..units import parse_index_list

    items = value if isinstance(value, list) else [value]
    out: list[int] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise spec_error(spec, where, f"expected unit numbers, ranges or class names, got {item!r}")
        text = str(item).strip()
        try:
            if isinstance(item, int) or re.fullmatch(r"[\d,\s-]+|all", text):
                out += parse_index_list(text, count, "units in this layer")
            elif labels is not None:
                from ..imagenet import class_index

                out.append(class_index(text, labels))
            else:
                raise VisfeatError(f"{text!r} is not a unit number or range (class names are for the logits layer)")
        except VisfeatError as e:
            raise spec_error(spec, where, f'{e}; valid units: 0-{count - 1} or "all"') from e
    if not out:
        raise spec_error(spec, where, "selects no units")
    return list(dict.fromkeys(out))


def _layer_units(spec: GallerySpec, i: int, ls: LayerSpec, model) -> Section:
    where = ("layers", i, "name")
    if ls.name in (LOGITS, "logit"):
        labels = model.labels
        if labels is None:
            from ..imagenet import imagenet_labels

            labels = imagenet_labels()
        n = model.layer(LOGITS).channels or len(labels)
        idx = _indices(spec, ("layers", i, "units"), ls.units, n, labels)
        units = tuple(GUnit(str(j), f"logit:{j}", j, labels[j] if j < len(labels) else f"class {j}") for j in idx)
        return Section(LOGITS, LOGITS, "class", units, ls.render)
    if ls.name not in model.layers:
        raise spec_error(spec, where, unknown("layer", ls.name, model.layers) + " (see `visfeat layers MODEL`)")
    info = model.layers[ls.name]
    if info.channels is None:
        raise spec_error(spec, where, f"layer {ls.name!r} has no tensor output; pick another (`visfeat layers`)")
    token = info.layout == "tokens"
    if token and ls.at is None:
        raise spec_error(spec, ("layers", i), f'{ls.name} is a token layer: add at = "mean" (or cls, patch=r,c)')
    idx = _indices(spec, ("layers", i, "units"), ls.units, info.channels)
    suffix = f"@{ls.at}" if ls.at else ""
    units = tuple(GUnit(_slug(f"{j}{suffix}"), f"{ls.name}:{j}{suffix}", j, f"{ls.name}:{j}{suffix}") for j in idx)
    from ..units import parse_unit

    for u in units[:1] + units[-1:]:
        try:
            parse_unit(u.unit).validate(model)
        except VisfeatError as e:
            raise spec_error(spec, ("layers", i), str(e)) from e
    tokens = "cls" if ls.at == "cls" else "all"
    return Section(ls.name, ls.name, "token" if token else "channel", units, ls.render, tokens)


def _sae_units(spec: GallerySpec, i: int, s: SAESpec, model) -> tuple[Section, int]:
    if s.layer not in model.layers:
        raise spec_error(spec, ("saes", i, "layer"), unknown("layer", s.layer, model.layers))
    d_in = model.layers[s.layer].channels
    if s.path is not None:
        from ..sae.io import read_meta

        try:
            d_sae = int(read_meta(s.path)["config"]["d_sae"])
        except (VisfeatError, OSError, KeyError) as e:
            raise spec_error(spec, ("saes", i, "path"), f"cannot read SAE {s.path}: {e}") from e
    else:
        from .. import sae as S

        if s.variant not in S.list_variants():
            raise spec_error(spec, ("saes", i, "variant"), unknown("SAE variant", s.variant, S.list_variants()))
        d_sae = s.expansion * d_in
        if not 1 <= s.k <= d_sae:
            raise spec_error(spec, ("saes", i, "k"), f"k must be in 1..{d_sae} (the dictionary size), got {s.k}")
    idx = _indices(spec, ("saes", i, "latents"), s.latents, d_sae)
    name = f"sae-{s.name}"
    units = tuple(GUnit(str(j), f"{s.layer}/{s.name}:{j}", j, f"latent {j}") for j in idx)
    return Section(name, s.layer, "latent", units, s.render, "all", s.name), d_sae


#: ``batch_size = "auto"`` off CUDA: the batch every CPU gallery was keyed with before "auto" existed.
CPU_BATCH = 32
#: The largest batch "auto" picks on CUDA, and the share of free memory it may fill.
MAX_BATCH, MEMORY_SHARE = 512, 0.8


def fit_batch(free: float, per_image: float, fixed: float, images_per_unit: int, cap: int = MAX_BATCH) -> int:
    """The largest power-of-two batch of units (at most ``cap``) whose renders fit in ``MEMORY_SHARE`` of
    ``free`` bytes, given each image's bytes (all its views) and the bytes that do not grow with the batch.
    A power of two (a multiple of 8 from 8 up), so a little more or less free memory rarely changes the
    batch, and with it the keys of every render job."""
    room = MEMORY_SHARE * free - fixed
    units = int(room // (max(per_image, 1.0) * max(images_per_unit, 1))) if room > 0 else 0
    return 1 << (min(max(units, 1), cap).bit_length() - 1)


def auto_batch_size(model, settings: RenderSettings, unit: str, probe: int = 8) -> int:
    """The batch of units for ``batch_size = "auto"`` on CUDA: the peak memory of one render step of ``unit``
    at ``probe // 2`` and ``probe`` images (times ``views``) gives the bytes per image and the fixed bytes; the
    batch is the largest that fits, counting the diverse render's ``max(2, diverse)`` images per unit."""
    from ..render import default_param, render
    from .jobs import diverse_images

    dev = model.device
    peaks = []
    for n in (probe // 2, probe):
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
        try:
            render(
                model,
                [unit] * n,
                param=default_param(model),
                steps=1,
                views=settings.views,
                amp=settings.amp,
                preact=settings.preact,
                progress=False,
            )
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            return 1
        torch.cuda.synchronize(dev)
        peaks.append(torch.cuda.max_memory_allocated(dev) - base)
    torch.cuda.empty_cache()  # cached blocks count as used in mem_get_info
    per_image = max(peaks[1] - peaks[0], 1) / (probe - probe // 2)  # one image of a unit, all its views
    fixed = max(0.0, peaks[1] - per_image * probe)
    free, _ = torch.cuda.mem_get_info(dev)
    return fit_batch(free, per_image, fixed, max(1, diverse_images(settings)))


def resolve_settings(model, settings: RenderSettings, unit: str | None = None) -> RenderSettings:
    """``settings`` with ``"auto"`` resolved for the model's device, so recipes and keys hold what runs:
    amp is bf16 on CUDA (where supported), else None; batch_size is :func:`auto_batch_size` of ``unit`` on
    CUDA, else (or without a unit) ``CPU_BATCH``."""
    cuda = model.device.type == "cuda"
    if settings.amp == "auto":
        settings = replace(settings, amp="bf16" if cuda and torch.cuda.is_bf16_supported() else None)
    if settings.batch_size == "auto":
        size = auto_batch_size(model, settings, unit) if cuda and unit else CPU_BATCH
        settings = replace(settings, batch_size=size)
    return settings


def _probe_unit(model, sec: Section) -> str:
    """A unit whose render costs what the section's do (an SAE's latents: a channel of its layer)."""
    if sec.kind != "latent":
        return sec.units[0].unit
    return f"{sec.layer}:0" + ("@mean" if model.layers[sec.layer].layout == "tokens" else "")


def make_plan(spec: GallerySpec, model, resolve=None) -> Plan:
    """Validate ``spec`` against ``model`` and list every job (no results are computed). ``resolve(model,
    settings, unit)`` turns ``"auto"`` render settings into values (default :func:`resolve_settings` on the
    model's device; a Ray build resolves them on a worker's GPU)."""
    resolve = resolve or resolve_settings
    fp = fingerprint(model)
    sections: list[Section] = []
    for i, ls in enumerate(spec.layers):
        sec = _layer_units(spec, i, ls, model)
        if any(s.name == sec.name for s in sections):
            raise spec_error(spec, ("layers", i, "name"), f"layer {sec.name!r} is listed twice; merge its units")
        sections.append(sec)
    saes: dict[str, dict] = {}
    for i, s in enumerate(spec.saes):
        sec, d_sae = _sae_units(spec, i, s, model)
        if any(x.name == sec.name for x in sections):
            raise spec_error(spec, ("saes", i, "name"), f"SAE name {s.name!r} is used twice")
        sections.append(sec)
        train = None if s.path else {k: getattr(s, k) for k in ("variant", "expansion", "k", "epochs", "images")}
        saes[s.name] = {"layer": s.layer, "path": s.path, "train": train, "d_sae": d_sae}
    for i, c in enumerate(spec.circuits):
        for src in c.sources:
            if src not in model.layers:
                raise spec_error(spec, ("circuits", i, "from"), unknown("layer", src, model.layers))
        from ..units import parse_unit

        try:
            u = parse_unit(c.unit)
            if "/" not in u.layer:
                u.validate(model)
        except VisfeatError as e:
            raise spec_error(spec, ("circuits", i, "unit"), str(e)) from e
    sections = [replace(sec, settings=resolve(model, sec.settings, _probe_unit(model, sec))) for sec in sections]
    images_key = recipe_key({"folder": spec.images, "n": spec.n_images, "size": image_size(model)})
    base = {"model": fp, "visfeat": __version__}
    jobs: list[Job] = []
    sae_keys = {}
    for name, s in saes.items():
        key = recipe_key({**base, "sae": name, **s, "images": images_key if s["train"] else None})
        sae_keys[name] = key
        jobs.append(Job("sae", key, f"sae-{name}", extra={"name": name, **s}))
    targets = {}
    for sec in sections:
        targets[sec.name] = recipe_key(
            {
                **base,
                "layer": sec.layer,
                "tokens": sec.tokens,
                "sae": sae_keys.get(sec.sae),
                "k": spec.k,
                "images": images_key,
            }
        )
    if targets:
        jobs.append(Job("examples", recipe_key(targets), extra={"targets": targets}))
    for sec in sections:
        r = sec.settings
        for start in range(0, len(sec.units), r.batch_size):
            chunk = sec.units[start : start + r.batch_size]
            seed = r.seed + start
            recipe = {
                **base,
                "units": [u.unit for u in chunk],
                "settings": r.recipe(),
                "seed": seed,
                "sae": sae_keys.get(sec.sae),
            }
            jobs.append(Job("render", recipe_key(recipe), sec.name, tuple(u.slug for u in chunk), seed))
    weight_sections = [s for s in sections if s.kind in ("channel", "latent")]
    for sec in weight_sections:
        jobs.append(
            Job(
                "weights",
                recipe_key(
                    {**base, "weights": sec.name, "order": _order_key(sections, sec), "sae": sae_keys.get(sec.sae)}
                ),
                sec.name,
            )
        )
    for c in spec.circuits:
        recipe = {
            **base,
            "circuit": c.unit,
            "from": c.sources,
            "k": c.k,
            "width": c.width,
            "settings": resolve(model, spec.render).recipe(),
        }
        jobs.append(Job("circuits", recipe_key(recipe), c.name, extra={"circuit": c}))
    return Plan(spec, model.name, _slug(model.name), fp, images_key, sections, jobs)


def _order_key(sections: list[Section], sec: Section) -> list:
    """What a section's weight neighbours are (the built units before and after it)."""
    return [[s.name, s.layer, [u.index for u in s.units]] for s in sections]


def image_size(model) -> int:
    """The side of the square images the model's dataset examples and SAEs read (224 for a model without one)."""
    return model.spec.size[0] if model.spec.size else 224
