"""A spec's sections: what one layer page shows (a model layer's units, or a stage's own, such as an SAE's
latents), each unit with its slug, unit string and name. Every layer, unit and class is checked against the model's
catalogue here, before any work; errors name the spec key, its line and the fix."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import VisfeatError, unknown
from ..hooks import LOGITS
from ..imagenet import class_index, class_name, imagenet_labels
from ..units import parse_index_list, parse_unit
from .spec import GallerySpec, LayerSpec, RenderSettings, spec_error


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


def slug(text: str) -> str:
    """A file-system-safe name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def indices(spec: GallerySpec, where: tuple, value, count: int, labels=None) -> list[int]:
    """Expand a units value (``"all"``, ``"0-31"``, ``"1,3,7-9"``, an int, a list, class names) into indices,
    each unit once."""
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
                out.append(class_index(text, labels))
            else:
                raise VisfeatError(f"{text!r} is not a unit number or range (class names are for the logits layer)")
        except VisfeatError as e:
            raise spec_error(spec, where, f'{e}; valid units: 0-{count - 1} or "all"') from e
    if not out:
        raise spec_error(spec, where, "selects no units")
    twice = sorted({i for i in out if out.count(i) > 1})
    if twice:
        raise spec_error(spec, where, f"unit {', '.join(map(str, twice))} is selected twice; name each unit once")
    return out


def layer_section(spec: GallerySpec, i: int, ls: LayerSpec, model) -> Section:
    """The section of ``[[layers]]`` entry ``i``: its units checked against the model's catalogue."""
    where = ("layers", i, "name")
    if ls.name in (LOGITS, "logit"):
        labels = model.labels if model.labels is not None else imagenet_labels()
        n = model.layer(LOGITS).channels or len(labels)
        idx = indices(spec, ("layers", i, "units"), ls.units, n, labels)
        units = tuple(GUnit(str(j), f"logit:{j}", j, class_name(labels, j)) for j in idx)
        return Section(LOGITS, LOGITS, "class", units, ls.render)
    if ls.name not in model.layers:
        raise spec_error(spec, where, unknown("layer", ls.name, model.layers) + " (see `visfeat layers MODEL`)")
    info = model.layers[ls.name]
    if info.channels is None:
        raise spec_error(spec, where, f"layer {ls.name!r} has no tensor output; pick another (`visfeat layers`)")
    token = info.layout == "tokens"
    if token and ls.at is None:
        raise spec_error(spec, ("layers", i), f'{ls.name} is a token layer: add at = "mean" (or cls, patch=r,c)')
    idx = indices(spec, ("layers", i, "units"), ls.units, info.channels)
    suffix = f"@{ls.at}" if ls.at else ""
    units = tuple(GUnit(slug(f"{j}{suffix}"), f"{ls.name}:{j}{suffix}", j, f"{ls.name}:{j}{suffix}") for j in idx)
    for u in units[:1] + units[-1:]:
        try:
            parse_unit(u.unit).validate(model)
        except VisfeatError as e:
            raise spec_error(spec, ("layers", i), str(e)) from e
    tokens = "cls" if ls.at == "cls" else "all"
    return Section(ls.name, ls.name, "token" if token else "channel", units, ls.render, tokens)


def layer_sections(spec: GallerySpec, model) -> list[Section]:
    """Every ``[[layers]]`` entry's section, each layer once."""
    out: list[Section] = []
    for i, ls in enumerate(spec.layers):
        sec = layer_section(spec, i, ls, model)
        if any(s.name == sec.name for s in out):
            raise spec_error(spec, ("layers", i, "name"), f"layer {sec.name!r} is listed twice; merge its units")
        out.append(sec)
    return out
