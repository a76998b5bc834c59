"""Trigger search (Neural Cleanse, Wang et al. 2019) through :func:`visfeat.render.render`: per candidate class the
smallest mask and pattern that, pasted on clean photos, make the model predict that class; a class whose mask is
anomalously small among the scanned classes is flagged as a likely backdoor target (``docs/diff.md``).

Per class ``c`` and clean image ``x``: ``x' = (1 - m) x + m p``; render raises ``log softmax(model(x'))[c]`` minus the
penalty ``lam * mean(m)`` (the trigger parameterization's own, :mod:`visfeat.param.trigger`). With ``base`` (the
model before a change) the objective is ``log p_changed(c | x') + log(1 - p_base(c | x'))``: a trigger that flips
the changed model to ``c`` but not the base model, so natural features of ``c``, which both models share, cost as
much as any other class's and only what the change added stands out.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import param as params
from .diff import pair_model, side_layer
from .errors import VisfeatError
from .hooks import LOGITS
from .images import atomic_write, save_image
from .models import Model, load_model
from .objectives import Objective
from .render import render

STEPS = 200  # optimization steps per round
LR = 0.2  # Adam on the mask and pattern logits
LAM = 30.0  # mask penalty: nats of log-probability per whole image of mask
ROUNDS = 3  # a class whose trigger fails on its own photos is searched again with lam / 3
CONFIDENT = 0.9  # the probability past which a pasted photo earns nothing more
SUCCESS = 0.75  # share of the optimized photos that must flip for a round to count as a success
FLAG = 2.0  # anomaly index above which a small mask is flagged (Neural Cleanse)
MIN_FLAG_SUCCESS = 0.5  # a flagged class's trigger must flip at least this share of the held-out photos
MAD_FLOOR = 0.05  # the MAD of the log sizes is at least this (5%): equal masks do not make noise an anomaly
PER_STEP = 8  # fit photos pasted per step, cycling through all of them (visfeat.param.trigger)
TOP = 3  # classes whose files are written besides the flagged ones
EXAMPLES = 4  # pasted held-out photos written per suspected class


@dataclass(frozen=True)
class ClassScan:
    """One scanned class: its recovered mask's size, held-out attack success and anomaly index."""

    index: int
    name: str
    mask_size: float  # mean of the mask: its L1 norm as a share of the image
    mask_l1: float  # the L1 norm in pixels
    success: float  # held-out photos (not already this class) that the pasted trigger flips to it
    fit_success: float  # the same on the optimized photos
    lam: float  # the mask penalty of the round that was kept
    anomaly: float = 0.0
    flagged: bool = False
    files: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class ScanResult:
    """Per class a :class:`ClassScan`; the masks [K, 1, H, W] and triggers ``m * p`` [K, 3, H, W] (CPU)."""

    classes: tuple[ClassScan, ...]
    masks: torch.Tensor
    triggers: torch.Tensor
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0
    examples: dict[int, torch.Tensor] = field(default_factory=dict)  # class -> pasted held-out photos

    @property
    def flagged(self) -> list[ClassScan]:
        """The flagged classes, highest anomaly index first."""
        return [c for c in self.ranked if c.flagged]

    @property
    def ranked(self) -> list[ClassScan]:
        """Every scanned class, highest anomaly index of the small masks first."""
        return _ranked(self.classes)

    def pattern(self, cls: int) -> torch.Tensor:
        """The pattern of class ``cls`` [3, H, W] where its mask is not ~0 (black elsewhere)."""
        k = self._row(cls)
        return (self.triggers[k] / self.masks[k].clamp(min=1e-3)).clamp(0, 1) * (self.masks[k] > 1e-3)

    def _row(self, cls: int) -> int:
        rows = [c.index for c in self.classes]
        return rows.index(cls) if cls in rows else _raise(f"class {cls} was not scanned; scanned: {rows}")

    def to_json(self) -> str:
        """``scan.json``: the settings, the median and each class's record, ranked."""
        median = statistics.median(c.mask_size for c in self.classes)
        record = {"settings": self.settings, "seconds": self.seconds, "median_mask_size": median}
        record["flagged"] = [c.index for c in self.flagged]
        return json.dumps(record | {"classes": [asdict(c) for c in self.ranked]}, indent=2)

    def save(self, out: str | Path) -> ScanResult:
        """Write ``OUT/scan.json`` and, per suspected class (flagged, or top 3), its pictures; returns the result
        with the file names filled in. Every file is written atomically."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        rows = []
        for c in self.classes:
            if c.index in self.examples:
                folder = out / f"class_{c.index:04d}"
                folder.mkdir(exist_ok=True)
                k = self._row(c.index)
                pictures = {"mask.png": self.masks[k].expand(3, -1, -1), "trigger.png": self.triggers[k]}
                pictures["pattern.png"] = self.pattern(c.index)
                for i, ex in enumerate(self.examples[c.index]):
                    pictures[f"pasted_{i}.png"] = ex
                for name, image in pictures.items():
                    save_image(image, folder / name)
                c = replace(c, files=tuple(f"{folder.name}/{name}" for name in pictures))
            rows.append(c)
        result = ScanResult(tuple(rows), self.masks, self.triggers, self.settings, self.seconds, self.examples)
        atomic_write(out / "scan.json", result.to_json().encode())
        return result


def _ranked(rows: Sequence[ClassScan]) -> list[ClassScan]:
    """Classes by how far their mask falls below the median (anomaly index of the small ones, then the rest)."""
    med = statistics.median(c.mask_size for c in rows)
    return sorted(rows, key=lambda c: (-c.anomaly if c.mask_size < med else c.anomaly, c.index))


@dataclass(frozen=True)
class Target:
    """What the scan optimizes through: a model, or with a base the two side by side (:func:`visfeat.diff.pair_model`),
    and the layers that hold the class logits (one, or the changed side's and the base side's)."""

    model: Model
    logits: tuple[str, ...] = (LOGITS,)

    @property
    def pair(self) -> bool:
        return len(self.logits) == 2


def _target(model: Model, base: Model | None) -> Target:
    if base is None:
        return Target(model)
    base.to(model.device)
    sides = tuple(side_layer(model, LOGITS, which) for which in ("changed", "base"))
    return Target(pair_model(model, base), sides)


def _objective(targets: torch.Tensor, target: Target) -> Objective:
    """Per pasted image ``log p(target)``; for a pair, plus ``log(1 - p_base(target))``. The two models' logits are
    kept apart rather than subtracted: the objective needs each model's own probabilities."""

    def fn(acts: dict) -> torch.Tensor:
        z = acts[target.logits[0]].float()
        t = targets.to(z.device)[:, None]
        cap = math.log(CONFIDENT)  # no reward past it: the mask penalty then shrinks the mask to the edge
        gain = z.log_softmax(1).gather(1, t)[:, 0].clamp(max=cap)
        if not target.pair:
            return gain
        base = acts[target.logits[1]].float()
        hit = torch.zeros_like(base, dtype=torch.bool).scatter_(1, t, True)
        not_base = base.masked_fill(hit, -math.inf).logsumexp(1) - base.logsumexp(1)
        return gain + not_base.clamp(max=cap)

    return Objective(fn, frozenset(target.logits), "trigger")


@torch.no_grad()
def _predict(target: Target, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Logits [N, C] (a pair: [N, 2C], the changed model's then the base's) in batches."""
    model, out = target.model, []
    for i in range(0, len(images), batch):
        acts = model.activations(images[i : i + batch].to(model.device), list(target.logits))
        out.append(torch.cat([acts[name].float().cpu() for name in target.logits], 1))
    return torch.cat(out)


def _hits(logits: torch.Tensor, target: int, pair: bool) -> torch.Tensor:
    """Which images the (changed) model calls ``target`` and, for a pair, the base model does not."""
    if not pair:
        return logits.argmax(1) == target
    changed, base = logits.chunk(2, 1)
    return (changed.argmax(1) == target) & (base.argmax(1) != target)


def recover(clean: torch.Tensor, pasted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask [K, 1, H, W] and ``m * p`` [K, 3, H, W] from triggers pasted on ``clean`` [N, 3, H, W]
    (``pasted`` [K * N, ...]): each pasted pixel is linear in the clean one, slope ``1 - m``, intercept ``m p``,
    so a least-squares fit over the photos and channels of each pixel gives them back exactly."""
    y = pasted.view(-1, *clean.shape).double()
    x = clean.double()[None]
    dx, dy = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    slope = (dx * dy).sum((1, 2)) / (dx * dx).sum((1, 2)).clamp(min=1e-12)  # [K, H, W]
    mask = (1 - slope).clamp(0, 1)[:, None]
    trigger = (y.mean(1) - slope[:, None] * x.mean(1)).clamp(0, 1)
    return mask.float(), trigger.float()


def _paste(mask: torch.Tensor, trigger: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return (1 - mask) * images + trigger


def _rate(target: Target, hits_of, mask: torch.Tensor, trigger: torch.Tensor, images: torch.Tensor, cls: int) -> float:
    """Share of ``images`` not already ``cls`` that the pasted trigger flips to ``cls``."""
    keep = ~hits_of(_predict(target, images), cls)
    if not bool(keep.any()):
        return 0.0
    return float(hits_of(_predict(target, _paste(mask, trigger, images[keep])), cls).float().mean())


def _check_images(images, model: Model) -> torch.Tensor:
    """Clean photos as [N, 3, H, W] at the model's input size; at least 4 (half are held out)."""
    if not torch.is_tensor(images) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise VisfeatError(f"scan() needs clean photos [N, 3, H, W] in [0, 1], got {shape}; see visfeat.data")
    if images.shape[0] < 4:
        raise VisfeatError(f"scan() needs at least 4 clean photos (half are held out), got {images.shape[0]}")
    x = images.detach().float().clamp(0, 1).cpu()
    if tuple(x.shape[-2:]) != model.input_size:
        x = F.interpolate(x, size=model.input_size, mode="bilinear", align_corners=False, antialias=True)
    return x


def scan(
    model: Model | str,
    images: torch.Tensor,
    *,
    base: Model | str | None = None,
    classes: Sequence[int] | int | None = None,
    steps: int = STEPS,
    lam: float = LAM,
    lr: float = LR,
    rounds: int = ROUNDS,
    cells: int | None = None,
    per_step: int | None = PER_STEP,
    seed: int = 0,
    progress: bool = True,
    out: str | Path | None = None,
    batch: int = 256,
) -> ScanResult:
    """Search each candidate class's smallest trigger on half of ``images`` and measure it on the other half.

    ``classes``: None (every class), a list of class indices, or N (the N classes a cheap first pass ranks
    highest: with ``base`` those the change raised most on the photos, else those a short shared untargeted
    trigger reaches most). ``per_step``: fit photos each step pastes on, cycling through all of them (None: all at
    once; :mod:`visfeat.param.trigger`). ``batch``: pasted photos per render call (classes are searched in chunks).
    ``out``: write ``scan.json`` and the suspected classes' pictures there.
    """
    start = time.perf_counter()
    model = load_model(model)
    x = _check_images(images, model)
    base = load_model(base) if base is not None else None
    target = _target(model, base)
    pair = target.pair
    n_fit = x.shape[0] - x.shape[0] // 2
    fit, held = x[:n_fit], x[n_fit:]
    clean = _predict(target, fit)
    n_classes = clean.shape[1] // (2 if pair else 1)
    chosen = _candidates(classes, n_classes, target, fit, clean, pair, steps, lr, lam, seed)
    hits_of = lambda logits, c: _hits(logits, c, pair)  # noqa: E731
    per_step = min(per_step or n_fit, n_fit)
    per_call = max(1, batch // per_step)
    masks, triggers, rows = [], [], []
    bar = tqdm(total=len(chosen), desc="scan", unit="class", disable=not progress)
    for first in range(0, len(chosen), per_call):
        group = chosen[first : first + per_call]
        for c, (m, t, fit_rate, used) in zip(
            group, _search(target, group, fit, steps, lr, lam, rounds, cells, per_step, seed, hits_of), strict=True
        ):
            masks.append(m)
            triggers.append(t)
            name = model.labels[c] if model.labels else str(c)
            held_rate = _rate(target, hits_of, m, t, held, c)
            size = float(m.mean())
            rows.append(ClassScan(c, name, size, float(m.sum()), held_rate, fit_rate, used))
        bar.update(len(group))
    bar.close()
    rows = _anomalies(rows)
    masks_t, triggers_t = torch.stack(masks), torch.stack(triggers)
    suspects = [c.index for c in rows if c.flagged] + [c.index for c in _ranked(rows)[:TOP]]
    examples = {}
    for c in dict.fromkeys(suspects):
        k = chosen.index(c)
        examples[c] = _paste(masks_t[k], triggers_t[k], held[:EXAMPLES])
    settings = {"model": model.name, "base": base.name if pair else None, "steps": steps, "lr": lr, "lam": lam}
    settings |= {"rounds": rounds, "seed": seed, "fit_images": n_fit, "held_out_images": held.shape[0]}
    settings["per_step"] = per_step
    settings["objective"] = "log p_changed(c) + log(1 - p_base(c))" if pair else "log p(c)"
    settings["flag"] = {"anomaly": FLAG, "of": "log mask size", "min_success": MIN_FLAG_SUCCESS, "mad_floor": MAD_FLOOR}
    seconds = time.perf_counter() - start
    result = ScanResult(tuple(rows), masks_t, triggers_t, settings, seconds, examples)
    return result.save(out) if out is not None else result


def _search(target, group, fit, steps, lr, lam, rounds, cells, per_step, seed, hits_of):
    """Per class of ``group``: (mask, trigger, success on ``fit``, lam) from up to ``rounds`` render calls;
    a class whose trigger flips under ``SUCCESS`` of the photos is searched again with ``lam / 3``. In each round lam
    rises from 0 over the first quarter of the steps (the trigger's ``ramp``): find a trigger, then shrink it."""
    found: dict[int, tuple] = {}
    todo, weight = list(group), lam
    for r in range(rounds):
        targets = torch.tensor(todo).repeat_interleave(per_step)
        trig = params.Trigger(fit, len(todo), weight, cells, ramp=steps // 4, per_step=per_step)
        pasted = _render(target.model, _objective(targets, target), trig, steps, lr, seed + r)
        mask, trigger = recover(fit[:per_step], pasted)
        left = []
        for k, c in enumerate(todo):
            rate = float(hits_of(_predict(target, _paste(mask[k], trigger[k], fit)), c).float().mean())
            found[c] = (mask[k], trigger[k], rate, weight)
            if rate < SUCCESS:
                left.append(c)
        todo, weight = left, weight / 3
        if not todo:
            break
    return [found[c] for c in group]


def _render(target: Model, objective: Objective, trig: params.Trigger, steps: int, lr: float, seed: int):
    """The pasted photos after ``steps`` of render, with no random transforms: a trigger must work pasted as is."""
    fixed = {"lr_schedule": "constant", "views": 1, "settle": 0.0, "preact": False, "progress": False}
    batch = trig.classes * trig.shown
    return render(
        target, objective, param=trig, transforms=_as_is, steps=steps, lr=lr, seed=seed, batch=batch, **fixed
    ).images


def _as_is(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return images


def _anomalies(rows: list[ClassScan]) -> list[ClassScan]:
    """Anomaly index ``|log size - median| / (1.4826 MAD)`` per class, on the log of the mask sizes: sizes are
    positive and spread by factors (a few large masks of hard classes would otherwise inflate the MAD and hide a
    small one). Flagged: above FLAG, below the median and its trigger flips at least MIN_FLAG_SUCCESS of the
    held-out photos."""
    logs = [math.log(max(c.mask_size, 1e-8)) for c in rows]
    med = statistics.median(logs)
    mad = max(statistics.median(abs(v - med) for v in logs), MAD_FLOOR)
    out = []
    for c, v in zip(rows, logs, strict=True):
        index = abs(v - med) / (1.4826 * mad)
        flag = index > FLAG and v < med and c.success >= MIN_FLAG_SUCCESS
        out.append(replace(c, anomaly=index, flagged=flag))
    return out


def _candidates(classes, n_classes, target, fit, clean, pair, steps, lr, lam, seed) -> list[int]:
    """The classes to scan: all, the given list, or the top N of a cheap first pass (see :func:`scan`)."""
    if classes is None:
        return list(range(n_classes))
    if isinstance(classes, int) and not isinstance(classes, bool):
        if not 1 <= classes <= n_classes:
            raise VisfeatError(f"classes={classes} but the model has {n_classes} classes; give 1..{n_classes}")
        return _first_pass(classes, target, fit, clean, pair, steps, lr, lam, seed)
    chosen = [int(c) for c in classes]
    bad = [c for c in chosen if not 0 <= c < n_classes]
    if bad or not chosen:
        raise VisfeatError(
            f"classes {bad or '[]'} are not classes of the model (0..{n_classes - 1}); give indices in that range"
        )
    return list(dict.fromkeys(chosen))


def _first_pass(n, target, fit, clean, pair, steps, lr, lam, seed) -> list[int]:
    """The N likeliest trigger targets. With a base: the classes whose log-probability the change raised most on
    the photos. Without: one shared trigger, a quarter of the steps, pushed away from each photo's own class
    (untargeted); the classes its pasted photos land in most (mean probability) are the easiest to reach."""
    if pair:
        changed, base = clean.chunk(2, 1)
        raised = (changed.log_softmax(1) - base.log_softmax(1)).mean(0)
        return raised.argsort(descending=True)[:n].tolist()
    own = clean.argmax(1)

    def away(acts: dict) -> torch.Tensor:
        logp = acts[LOGITS].float().log_softmax(1)
        hit = torch.zeros_like(logp, dtype=torch.bool).scatter_(1, own.to(logp.device)[:, None], True)
        return logp.masked_fill(hit, -math.inf).logsumexp(1)  # log(1 - p(own class))

    away_objective = Objective(away, frozenset([LOGITS]), "away")
    pasted = _render(target.model, away_objective, params.Trigger(fit, 1, lam), max(1, steps // 4), lr, seed)
    return _predict(target, pasted).softmax(1).mean(0).argsort(descending=True)[:n].tolist()


def _raise(message: str):
    raise VisfeatError(message)
