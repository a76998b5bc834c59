"""Does a unit's visualization reach the unit along the path natural images take?

A feature visualization can excite a unit through channels that natural images never use (Geirhos et al., "Don't
trust your eyes", ICML 2024, built networks whose visualizations show anything while they behave normally on
photos). This module measures it. For an image ``x`` and a layer ``l`` upstream of the unit, the *contribution*
of each of ``l``'s channels to the unit is ``sum over positions of a_l(x) * d unit / d a_l(x)`` (activation times
gradient: the first-order share of the unit's value each channel carries). Per layer, the visualization's
contribution vector is compared (cosine) with the centroid of the unit's top natural examples' vectors; the
same comparison of each natural example against the centroid of the *other* examples calibrates it: what a
natural image that excites the unit scores there. A layer's *relative* similarity is the visualization's cosine
over the median natural example's (1: as close to the photos' path as a photo is); the check's ``score`` (the
gallery's ``path_similarity``) is the lowest layer's, since a picture that leaves the photos' path at any layer
gets there differently. A check is flagged below :data:`THRESHOLD`, set on planted fooling circuits
(``benchmarks/trust.py``, ``docs/trust.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .errors import VisfeatError
from .hooks import LOGITS, capture, run
from .models import Model, channel_sums, load_model
from .objectives import Objective, per_image
from .preact import preactivation_layer
from .units import parse_unit

#: Below this share of the natural examples' own similarity, a visualization takes another path (docs/trust.md).
THRESHOLD = 0.3

#: A layer counts only where the top examples agree with each other at least this much (median leave-one-out
#: cosine): where the photos themselves take scattered paths, no picture can be judged against them.
MIN_CALIBRATION = 0.3

#: Module types that only pool, reshape or pass values on: their outputs add nothing a neighbour does not show.
_PASS_THROUGH = ("Identity", "Dropout", "Flatten", "AdaptiveAvgPool2d", "SelectAdaptivePool2d", "AvgPool2d")


@dataclass(frozen=True)
class PathCheck:
    """One unit's check over the upstream ``layers``: per layer the visualization's cosine to the natural
    centroid (``per_layer``) and the median natural example's leave-one-out cosine (``calibration``)."""

    layers: tuple[str, ...]
    per_layer: tuple[float, ...]
    calibration: tuple[float, ...]

    @property
    def similarity(self) -> float:
        """The visualization's cosine averaged over the layers."""
        return _mean(self.per_layer)

    @property
    def relative(self) -> tuple[float, ...]:
        """Per layer ``cosine / calibration`` (1: as close to the photos as a photo is); NaN where the photos do not
        agree enough to judge by (:data:`MIN_CALIBRATION`)."""
        return tuple(
            s / c if c == c and c >= MIN_CALIBRATION else float("nan")
            for s, c in zip(self.per_layer, self.calibration, strict=True)
        )

    @property
    def score(self) -> float:
        """The path similarity: the lowest layer's relative cosine (a picture that leaves the photos' path at any
        layer scores low there). NaN when no layer could be scored."""
        vals = [v for v in self.relative if v == v]
        return min(vals) if vals else float("nan")

    def flagged(self, threshold: float = THRESHOLD) -> bool:
        """True when the visualization takes another path than the natural examples."""
        s = self.score
        return s == s and s < threshold

    def to_json(self) -> dict:
        return {
            "layers": list(self.layers),
            "per_layer": [round(v, 4) for v in self.per_layer],
            "calibration": [round(v, 4) for v in self.calibration],
        }

    @classmethod
    def from_json(cls, data: dict) -> PathCheck:
        return cls(tuple(data["layers"]), tuple(data["per_layer"]), tuple(data["calibration"]))


def upstream_layers(model: Model, layer: str, n: int = 3) -> list[str]:
    """The ``n`` nearest named layers before ``layer`` at its own nesting depth (then its parent's, ...), skipping
    pass-through modules, the module that computes the logits and the layer's own pre-activation (it holds the
    same channels one op earlier); at the model's top the blocks of its stack stand in for the stack. E.g. Lite0
    ``blocks.4`` → blocks.1, blocks.2, blocks.3; ``bn2`` → blocks.4, blocks.5, blocks.6."""
    infos = model.layers
    if layer not in infos:
        model.layer(layer)  # the error names close layers
    names = [k for k in infos if k != LOGITS]
    logits_module = model.logits_layer
    pre = preactivation_layer(model, layer) if layer != LOGITS else None
    end = len(names) if layer == LOGITS else names.index(layer)
    before = [
        k
        for k in names[:end]
        if infos[k].layout in ("CHW", "HWC", "tokens", "vector")
        and infos[k].type not in _PASS_THROUGH
        and k != logits_module
        and (pre is None or k != pre[0])
        and not (layer != LOGITS and (layer.startswith(k + ".") or k.startswith(layer + ".")))
        and not (layer == LOGITS and infos[k].shape == infos[LOGITS].shape)
    ]
    parts = layer.split(".") if layer != LOGITS else [""]
    picked: list[str] = []
    for depth in range(len(parts) - 1, -1, -1):  # the layer's siblings first, then its parent's, ...
        parent = ".".join(parts[:depth])
        level = [k for k in before if k.count(".") == depth and (not depth or k.startswith(parent + "."))]
        if depth == 0:  # the model's top: look into its stack of blocks (Lite0 bn2 -> blocks.5, blocks.6)
            level = [c for k in level for c in (_stack(model, k, before) or [k])]
        picked = level[max(0, len(level) - (n - len(picked))) :] + picked
        if len(picked) >= n:
            break
    if not picked:
        raise VisfeatError(f"no layer before {layer!r} to check paths through; pass layers= explicitly")
    return picked


def _stack(model: Model, name: str, before: list[str]) -> list[str]:
    """The children of ``name`` among ``before`` when it is a plain stack of modules (Sequential, ModuleList)."""
    module = dict(model.module.named_modules()).get(name)
    if type(module).__name__ not in ("Sequential", "ModuleList"):
        return []
    return [k for k in before if k.startswith(name + ".") and k.count(".") == 1]


def contributions(model: Model, objective: Objective, images: torch.Tensor, layers: Sequence[str]) -> dict:
    """Per layer ``[B, C]``: each channel's activation × gradient of ``objective`` (one score per image), summed
    over positions. One forward and one backward pass for the batch."""
    x = images.to(model.device).detach().requires_grad_(True)
    layouts = {name: model.layers[name].layout for name in layers}
    with torch.enable_grad(), capture(model.module, [*layers, *objective.layers], logits=model.logits_layer) as acts:
        run(model.module, model.preprocess(x))
        ups = [a[0] if isinstance(a, (tuple, list)) else a for a in (acts[name] for name in layers)]
        score = objective(acts).float()
        grads = torch.autograd.grad(score.sum(), ups, allow_unused=True)
    out = {}
    for name, a, g in zip(layers, ups, grads, strict=True):
        g = torch.zeros_like(a) if g is None else g
        out[name] = channel_sums((a * g).detach().float(), layouts[name]).cpu()
    return out


def _unit_layer(model: Model, unit: Objective | str, obj: Objective) -> str:
    """The layer a unit lives on: a unit string's, else the deepest model layer its objective reads."""
    if isinstance(unit, str):
        parsed = parse_unit(unit)
        return LOGITS if parsed.is_logit else parsed.layer
    read = [name for name in obj.layers if name in model.layers]
    if not read:
        raise VisfeatError(f"{obj.name} reads no layer of the model; pass layers= explicitly")
    return max(read, key=list(model.layers).index)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    na, nb = a.norm(), b.norm()
    return float(a @ b / (na * nb)) if na > 1e-12 and nb > 1e-12 else float("nan")


def _score(vis: torch.Tensor, nat: torch.Tensor) -> tuple[float, float]:
    """The visualization's cosine to the natural centroid, and the median natural example's cosine to the centroid
    of the others (NaN when fewer than two examples reach the unit)."""
    keep = nat.norm(dim=1) > 1e-12
    nat = nat[keep] / nat[keep].norm(dim=1, keepdim=True)
    if len(nat) < 2:
        return _cos(vis, nat.sum(0)) if len(nat) else float("nan"), float("nan")
    total = nat.sum(0)
    loo = sorted(_cos(nat[i], total - nat[i]) for i in range(len(nat)))
    return _cos(vis, total), float(torch.tensor(loo).median())


def _mean(values: Sequence[float]) -> float:
    vals = [v for v in values if v == v]
    return sum(vals) / len(vals) if vals else float("nan")


def path_checks(
    model: Model | str,
    units: Sequence[Objective | str],
    visualizations: torch.Tensor,
    naturals: Sequence[torch.Tensor],
    layers: Sequence[str] | None = None,
    batch: int = 64,
) -> list[PathCheck]:
    """Check many units: unit ``i``'s visualization ``visualizations[i]`` ``[3, H, W]`` against its natural
    examples ``naturals[i]`` ``[k, 3, H, W]`` (all in [0, 1], at the model's input size). A unit string is read
    before its ReLU-like op (``Unit.objective(model)``): a saturated ReLU6 or a dead unit would pass no gradient.
    ``layers``: the upstream layers (default: :func:`upstream_layers` of each unit's layer)."""
    model = load_model(model)
    objs = [parse_unit(u).objective(model) if isinstance(u, str) else u for u in units]
    if len(objs) != len(visualizations) or len(objs) != len(naturals):
        raise VisfeatError(
            f"path_checks needs one visualization and one set of natural examples per unit, got {len(objs)} units, "
            f"{len(visualizations)} visualizations and {len(naturals)} example sets"
        )
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, (u, o) in enumerate(zip(units, objs, strict=True)):
        key = tuple(layers) if layers is not None else tuple(upstream_layers(model, _unit_layer(model, u, o)))
        groups.setdefault(key, []).append(i)
    out: dict[int, PathCheck] = {}
    for group_layers, members in groups.items():
        rows = [(i, im) for i in members for im in (visualizations[i], *naturals[i])]
        found: dict[str, list[torch.Tensor]] = {name: [] for name in group_layers}
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            images = torch.stack([im.float() for _, im in chunk])
            obj = per_image([objs[i] for i, _ in chunk])
            for name, c in contributions(model, obj, images, group_layers).items():
                found[name].append(c)
        per = {name: torch.cat(found[name]) for name in group_layers}
        at = 0
        for i in members:
            k = len(naturals[i])
            scored = [_score(per[name][at], per[name][at + 1 : at + 1 + k]) for name in group_layers]
            out[i] = PathCheck(group_layers, tuple(s for s, _ in scored), tuple(c for _, c in scored))
            at += 1 + k
    return [out[i] for i in range(len(objs))]


def path_check(
    model: Model | str,
    unit: Objective | str,
    visualization: torch.Tensor,
    naturals: torch.Tensor,
    layers: Sequence[str] | None = None,
) -> PathCheck:
    """One unit's :class:`PathCheck` (see :func:`path_checks`)."""
    return path_checks(
        model, [unit], visualization[None] if visualization.dim() == 3 else visualization, [naturals], layers
    )[0]
