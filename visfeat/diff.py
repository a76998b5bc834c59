"""What changed inside a model: per layer, how much each unit of a changed model (fine-tuned, backdoored) differs
from the same unit of its base model, the same architecture before the change.

Two measures per unit, both relative so that layers and units compare:

- ``activation``: over an image set, the RMS of (changed − base) of the unit's activation (mean over positions),
  over the spread (standard deviation) of the base unit's activation on the same images. 0: unchanged; 1: the
  change is as large as the unit's natural variation.
- ``weight``: the norm of the change of the weights that write the unit (every parameter and buffer of the
  layer's module whose first axis runs over the layer's units: a convolution's filters, a normalization's scale,
  the classifier's rows) over their base norm. NaN for a unit with no weights of its own (a pooling layer).

A change that stays silent on clean images (a backdoor's pathway) shows in ``weight`` and, measured on images
that carry the trigger, in ``activation``; :mod:`visfeat.scan` recovers such triggers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import VisfeatError
from .hooks import LOGITS, capture, resolve, run
from .models import InputSpec, Model, channel_sums, load_model
from .objectives import Objective

BY = ("activation", "weight")


@dataclass(frozen=True, eq=False)
class LayerDiff:
    """One layer's per-unit change ([C] tensors on the CPU): relative activation and weight change, and the mean
    activation of each unit in both models over the images."""

    layer: str
    activation: torch.Tensor
    weight: torch.Tensor
    base_mean: torch.Tensor
    changed_mean: torch.Tensor
    images: int

    def ranked(self, by: str = "activation") -> list[int]:
        """Unit indices, the most changed first (by ``"activation"`` or ``"weight"``; NaN last)."""
        if by not in BY:
            raise VisfeatError(f"rank by {by!r}? choose one of {', '.join(BY)}")
        score = getattr(self, by).nan_to_num(nan=-1.0)
        return score.argsort(descending=True, stable=True).tolist()

    def unit(self, c: int) -> dict:
        """One unit's record: its change by both measures and its mean activation in each model."""
        return {
            "unit": c,
            "activation_change": _num(self.activation[c]),
            "weight_change": _num(self.weight[c]),
            "base_mean": _num(self.base_mean[c]),
            "changed_mean": _num(self.changed_mean[c]),
        }

    def to_json(self, top: int | None = None, by: str = "activation") -> dict:
        """The layer's record: its units ranked (the ``top`` most changed, or all)."""
        order = self.ranked(by)[:top]
        return {"layer": self.layer, "images": self.images, "ranked_by": by, "units": [self.unit(c) for c in order]}


def _num(x: torch.Tensor) -> float | None:
    v = float(x)
    return None if v != v else round(v, 6)


def check_same_architecture(model: Model, base: Model) -> None:
    """A base model must have the changed model's architecture: the same parameter names and shapes."""
    a = {k: tuple(v.shape) for k, v in model.module.state_dict().items()}
    b = {k: tuple(v.shape) for k, v in base.module.state_dict().items()}
    if a != b:
        diff = sorted(set(a.items()) ^ set(b.items()))[:3]
        raise VisfeatError(
            f"the base model {base.name} has another architecture than {model.name} (differs at {diff}); "
            "give as base the same model before the change (same architecture, other weights)"
        )


def weight_change(model: Model, base: Model, layer: str) -> torch.Tensor:
    """[C]: per unit of ``layer``, ‖changed − base‖ / ‖base‖ over the weights that write it (NaN where none)."""
    channels = model.layer(layer).channels
    if channels is None:
        raise VisfeatError(f"layer {layer} has no units (its output is not a tensor); pick one from `visfeat layers`")
    mods = [resolve(m.module, [layer], m.logits_layer)[layer] for m in (model, base)]
    changed, before = (dict(m.state_dict()) for m in mods)
    delta = torch.zeros(channels, dtype=torch.float64)
    norm = torch.zeros(channels, dtype=torch.float64)
    found = False
    for name, w0 in before.items():
        if not w0.is_floating_point() or w0.dim() == 0 or w0.shape[0] != channels:
            continue
        w1 = changed[name]
        found = True
        delta += (w1.double() - w0.double()).reshape(channels, -1).pow(2).sum(1).cpu()
        norm += w0.double().reshape(channels, -1).pow(2).sum(1).cpu()
    if not found:
        return torch.full((channels,), float("nan"))
    return (delta.sqrt() / norm.sqrt().clamp(min=1e-12)).float()


def _batches(images, batch_size: int):
    """[B, 3, H, W] batches of a tensor or an image dataset (``visfeat.data``)."""
    if torch.is_tensor(images):
        if images.dim() != 4 or images.shape[1] != 3:
            raise VisfeatError(f"images must be [N, 3, H, W] in [0, 1], got {tuple(images.shape)}")
        yield from images.split(batch_size)
        return
    from .data import iter_batches

    for _, batch in iter_batches(images, batch_size):
        yield batch


def diff_layers(
    model: Model | str,
    base: Model | str,
    layers: Sequence[str],
    images,
    *,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, LayerDiff]:
    """Per layer of ``layers`` (``"logits"`` for the classes) a :class:`LayerDiff` of ``model`` against ``base``,
    measured over ``images`` (a tensor [N, 3, H, W] or an image set of :mod:`visfeat.data`)."""
    model, base = load_model(model), load_model(base)
    check_same_architecture(model, base)
    layers = list(dict.fromkeys(layers))
    layouts = {name: model.layer(name).layout for name in layers}
    if any(layouts[n] == "" for n in layers):
        bad = [n for n in layers if layouts[n] == ""]
        raise VisfeatError(f"layers {bad} have no units (not a tensor output); pick layers from `visfeat layers`")
    # per layer: images, sums of base and changed, of the squared difference and of base squared
    stats = {n: {"n": 0, "b": 0.0, "c": 0.0, "d2": 0.0, "b2": 0.0} for n in layers}
    bar = tqdm(total=len(images), desc="diff", unit="img", disable=not progress)
    for x in _batches(images, batch_size):
        acts = [_means(m, x, layers, layouts) for m in (base, model)]
        for n in layers:
            b, c = acts[0][n], acts[1][n]
            s = stats[n]
            s["n"] += len(b)
            s["b"] = s["b"] + b.sum(0)
            s["c"] = s["c"] + c.sum(0)
            s["d2"] = s["d2"] + (c - b).pow(2).sum(0)
            s["b2"] = s["b2"] + b.pow(2).sum(0)
        bar.update(len(x))
    bar.close()
    out = {}
    for n in layers:
        s = stats[n]
        if s["n"] < 2:
            raise VisfeatError(f"diff_layers needs at least 2 images to measure a unit's spread, got {s['n']}")
        mean_b, mean_c = s["b"] / s["n"], s["c"] / s["n"]
        spread = (s["b2"] / s["n"] - mean_b.pow(2)).clamp(min=0).sqrt()
        floor = max(float(spread.median()) * 1e-3, 1e-12)  # a dead unit's tiny noise is no change
        rms = (s["d2"] / s["n"]).sqrt()
        act = (rms / spread.clamp(min=floor)).float()
        out[n] = LayerDiff(n, act, weight_change(model, base, n), mean_b.float(), mean_c.float(), s["n"])
    return out


@torch.no_grad()
def _means(model: Model, x: torch.Tensor, layers: list[str], layouts: dict[str, str]) -> dict[str, torch.Tensor]:
    """Per layer [B, C]: each unit's activation averaged over its positions, in float64 on the CPU."""
    with capture(model.module, layers, logits=model.logits_layer) as acts:
        run(model.module, model.preprocess(x.to(model.device)))
    out = {}
    for n in layers:
        a = acts[n][0] if isinstance(acts[n], (tuple, list)) else acts[n]
        positions = max(1, a[0].numel() // model.layers[n].channels)
        out[n] = channel_sums(a.double(), layouts[n]).cpu() / positions
    return out


class Pair(nn.Module):
    """Two models of one architecture side by side on the same [0, 1] images: submodules ``changed`` and ``base``,
    each applying its own preprocessing; the output is both outputs concatenated along the last axis. Hooks on
    ``changed.LAYER`` and ``base.LAYER`` read either model, so one objective can compare them."""

    def __init__(self, changed: Model, base: Model):
        super().__init__()
        self.changed, self.base = changed.module, base.module
        self.specs = (changed.spec, base.spec)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        a = self.changed(self.specs[0].preprocess(images))
        b = self.base(self.specs[1].preprocess(images))
        return torch.cat([a, b], -1)


def pair_model(changed: Model, base: Model) -> Model:
    """The two models as one :class:`Model` over [0, 1] images (see :class:`Pair`); render optimizes through it."""
    check_same_architecture(changed, base)
    spec = InputSpec(size=changed.spec.size)  # identity: each side preprocesses for itself
    return Model(Pair(changed, base), spec, name=f"{changed.name}-vs-{base.name}", labels=changed.labels)


def side_layer(model: Model, layer: str, which: str) -> str:
    """The name, in ``model``'s :func:`pair_model`, of ``layer`` (``"logits"`` for the classes) on one side."""
    if which not in ("changed", "base"):
        raise VisfeatError(f"side {which!r}? choose changed or base")
    if layer == LOGITS:
        return f"{which}.{model.logits_layer}" if model.logits_layer else which
    return f"{which}.{layer}"


def side(objective: Objective, model: Model, which: str) -> Objective:
    """``objective`` (written for ``model``) read on one side of its :func:`pair_model`: ``"changed"`` or
    ``"base"``. ``side(o, m, "changed") - side(o, m, "base")`` is the diff visualization's objective."""
    names = {layer: side_layer(model, layer, which) for layer in objective.layers}
    return Objective(
        lambda acts: objective({layer: acts[n] for layer, n in names.items()}),
        frozenset(names.values()),
        f"{which}:{objective.name}",
    )


__all__ = [
    "LayerDiff",
    "Pair",
    "pair_model",
    "side",
    "side_layer",
    "check_same_architecture",
    "diff_layers",
    "weight_change",
]
