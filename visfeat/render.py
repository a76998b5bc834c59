"""render: the one optimization loop that turns objectives into images.

``render(model, objectives)`` builds a parameterized image batch, and for ``steps`` iterations
applies random transforms, runs the model up to the deepest layer the objective needs, and takes an
Adam step to raise the objective. A list of N objectives is rendered as one batch of N images.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from . import param as params
from . import transforms as tf
from .errors import NonFiniteObjectiveError, VisfeatError
from .hooks import capture, run
from .models import Model, load_model
from .objectives import INPUT, Objective, per_image
from .presets import get_preset
from .units import as_objective, parse_unit
from .vit.defaults import vit_param, vit_transforms


@dataclass
class RenderResult:
    """Images [N, 3, H, W] in [0, 1] (CPU), per-step objective values [steps, N], and the settings."""

    images: torch.Tensor
    history: torch.Tensor
    names: list[str]
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0
    #: images at the step counts given as ``render(snapshots=...)``, and the optimization seconds up to each
    snapshots: dict[int, torch.Tensor] = field(default_factory=dict)
    snapshot_seconds: dict[int, float] = field(default_factory=dict)

    @property
    def final(self) -> torch.Tensor:
        """Objective value of each image at the last step."""
        return self.history[-1]


#: The default low-pass (``params.fourier(cutoff=...)``), a smooth fall to 0.8 x Nyquist: the finest scales held
#: speckle (HF share 16% -> 2% at 64 steps). 0.6 from LONG_RUN steps, which push the open scales into speckle again.
FOURIER_CUTOFF, FOURIER_CUTOFF_LONG, LONG_RUN = 0.8, 0.6, 256
#: The spectrum 1/f^1.05: more weight on coarse structure than natural images' 1/f, less speckle, more contrast;
#: coarse to fine over the first 32 steps (``fourier(grow=)``): objects drawn large before detail; a penalty on
#: colour logits near pure black and white (``fourier(headroom=)``): no clipped pixels (all: docs/quality.md).
FOURIER_DECAY, FOURIER_GROW, FOURIER_HEADROOM = 1.05, 32, 1000.0
#: A layer that sees the picture at 1/COARSE of its side or coarser gets the low-pass and headroom (see _coarse).
COARSE = 16


def default_param(model: Model, objectives: Iterable[Objective] = (), steps: int | None = None) -> params.Param:
    """Fourier at the model's input size (128 px for a model without one), spectrum 1/f^1.05. Not lucent's 128 px image
    upsampled to 224: at full resolution every step moves every pixel the model sees, and lucent's 512-step quality
    comes after 128 steps instead of 192-320 (``docs/performance.md``). Low-passed (``FOURIER_CUTOFF``, ``_LONG`` from
    LONG_RUN ``steps``) unless one of ``objectives`` reads a layer finer than 1/16 of the input: shallow units want
    the finest scales (a ``blocks.2`` channel's ratio 8.3 without, 5.7 with), deep units and classes lose only speckle
    (``docs/quality.md``); low-passed units also get ``FOURIER_HEADROOM`` (a shallow unit may want saturated colour).
    Coarse to fine (``FOURIER_GROW``). ViTs: ``vit_param``."""
    vit = vit_param(model)
    if vit is not None:
        return vit
    h, w = model.spec.size or (128, 128)
    layers = set().union(*(o.layers for o in objectives)) - {INPUT}
    coarse = all(_coarse(model, name) for name in layers)
    cutoff = (FOURIER_CUTOFF_LONG if steps is not None and steps >= LONG_RUN else FOURIER_CUTOFF) if coarse else None
    size, headroom = (h if h == w else (h, w)), (FOURIER_HEADROOM if coarse else 0.0)
    return params.fourier(size, decay=FOURIER_DECAY, cutoff=cutoff, grow=FOURIER_GROW, headroom=headroom)


def _coarse(model: Model, layer: str) -> bool:
    """Whether ``layer`` sees the picture at 1/COARSE of its side or coarser. A vector (class logits) or a name the
    catalogue lacks sees it through the model's coarsest map, global pools aside: Lite0's logits through 7x7 of 224
    (1/32), a toy CNN's through 8x8 of 32 (1/4), where the finest scales are the object's own detail."""
    info = model.layers.get(layer)
    if info is not None and info.grid is not None:
        height = info.grid[0]
    else:
        maps = [i.grid[0] for i in model.layers.values() if i.grid is not None and i.grid[0] > 1]
        if not maps:
            return True
        height = min(maps)
    return height * COARSE <= model.input_size[0]


def default_transforms(model: Model) -> tf.Transform:
    """Lucid's robustness set, then a resize to the model's input size (as lucent does).
    Token models (ViTs) get :func:`visfeat.vit.defaults.vit_transforms` instead."""
    vit = vit_transforms(model)
    if vit is not None:
        return vit
    parts = [tf.standard()]
    if model.spec.size is not None:
        parts.append(tf.resize(model.spec.size))
    return tf.compose(*parts)


def _objectives(
    objectives: Objective | str | Sequence[Objective | str], batch: int | None, model: Model | None = None
) -> tuple[Objective, int, list[str]]:
    """One objective over the batch, its image count and per-image names; unit strings are read on their
    pre-activation when ``model`` is given (``render(preact=True)``), Objective instances are left alone."""
    if isinstance(objectives, (Objective, str)):
        obj = _as_objective(objectives, model)
        n = batch or 1
        return obj, n, [obj.name] * n
    objs = [_as_objective(o, model) for o in objectives]
    if batch not in (None, len(objs)):
        raise VisfeatError(f"batch={batch} but {len(objs)} objectives were given (one image each); drop batch=")
    return per_image(objs), len(objs), [o.name for o in objs]


def _as_objective(obj: Objective | str, model: Model | None) -> Objective:
    """A unit string's objective (its pre-activation one given ``model``), or the Objective itself."""
    if isinstance(obj, str) and model is not None:
        return parse_unit(obj).objective(model, preact=True)
    return as_objective(obj)


def _autocast(device: torch.device, amp: str | None):
    if amp is None:
        return contextlib.nullcontext(), None
    if device.type != "cuda":
        raise VisfeatError(f"amp={amp!r} is for CUDA devices; the model is on {device}. Drop amp= on CPU/MPS")
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    if amp not in dtypes:
        raise VisfeatError(f"amp must be 'bf16' or 'fp16', got {amp!r}")
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    return torch.autocast("cuda", dtype=dtypes[amp]), scaler


def render(
    model: Model | str,
    objectives: Objective | str | Sequence[Objective | str],
    *,
    param: params.Param | None = None,
    transforms: tf.Transform | None = None,
    preset: str = "default",
    steps: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    batch: int | None = None,
    device: str | torch.device | None = None,
    amp: str | None = None,
    progress: bool | Callable[[int], None] = True,
    snapshots: Sequence[int] = (),
    views: int | None = None,
    lr_schedule: str | None = None,
    settle: float | None = None,
    preact: bool = True,
) -> RenderResult:
    """Optimize images that maximize ``objectives``.

    ``objectives``: an Objective or unit string (``batch`` images of it), or a list of them (one
    image each, optimized together). ``preset`` (:mod:`visfeat.presets`: ``"draft"``, ``"default"``,
    ``"heavy"``) gives ``steps``, ``lr``, ``views`` and ``lr_schedule`` where they are None (not passed).
    ``param`` defaults to :func:`default_param`, ``transforms`` to :func:`default_transforms`.
    Deterministic on CPU for a fixed ``seed``. ``amp`` ("bf16"/"fp16") enables autocast on CUDA.
    ``snapshots``: step counts (1..steps) after which a copy of the images is kept in
    ``RenderResult.snapshots`` (one run shows quality against steps; the copies are not timed).
    ``views``: random transforms of every image per step, their scores averaged (a lower-variance
    gradient of the expectation over transforms, at ``views`` times the cost of a step).
    ``lr_schedule``: "constant", or "cosine" (decays ``lr`` to 0 over the steps). ``settle``: the last
    ``settle`` share of the steps (0.125: the last 8 of 64) see the image as it is shown (resized to the
    model's input, no random transforms), so the robust picture is finished on the view a reader sees
    (``docs/quality.md``). ``progress``: a bar,
    or a function called with 1 after every step (a caller's own progress, e.g. a whole gallery build).
    ``preact``: a unit string whose layer ends in a ReLU-like op (ReLU, ReLU6, GELU, a fused BatchNorm+act)
    is optimized on that op's input (:mod:`visfeat.preact`), so a unit that is dead for the initial image
    still moves; the history then holds pre-activation values. Objective instances are never changed.
    A parameterization's own penalty: when the built module has ``penalty()`` (per image [N], or one value),
    it is subtracted from the objective every step, and the history holds the penalized scores. When it has
    ``set_progress(step, steps)``, it is told where the run is before each step (a coarse-to-fine image).
    """
    chosen = get_preset(preset)
    steps = chosen.steps if steps is None else steps
    lr = chosen.lr if lr is None else lr
    views = chosen.views if views is None else views
    lr_schedule = chosen.lr_schedule if lr_schedule is None else lr_schedule
    settle = chosen.settle if settle is None else settle
    model = load_model(model)
    if steps < 1:
        raise VisfeatError(f"steps must be at least 1, got {steps}")
    if not 0 <= settle < 1:
        raise VisfeatError(f"settle must be a share of the steps in [0, 1) (e.g. 0.125), got {settle}")
    transformed = steps - round(settle * steps)
    if views < 1:
        raise VisfeatError(f"views must be at least 1 (random transforms per image and step), got {views}")
    if not (math.isfinite(lr) and lr > 0):
        raise VisfeatError(f"lr must be a positive finite learning rate (e.g. 0.05), got {lr}")
    lr_at = _schedule(lr_schedule, lr, steps)
    obj, n, names = _objectives(objectives, batch, model if preact else None)
    keep = sorted(set(snapshots))
    if keep and not 1 <= keep[0] <= keep[-1] <= steps:
        raise VisfeatError(f"snapshots must be step counts in 1..{steps}, got {keep}")
    if device is not None:
        model.to(device)
    dev = model.device
    param = param or default_param(model, [obj], steps)
    custom_transforms = transforms is not None
    transforms = transforms or default_transforms(model)
    shown_view = _shown_view(model)
    gen = torch.Generator().manual_seed(seed)
    image = param.build(n, gen, dev)
    penalty = getattr(image, "penalty", None)  # e.g. a trigger mask's size (visfeat.param.trigger)
    set_progress = getattr(image, "set_progress", lambda step, steps: None)  # e.g. a coarse-to-fine Fourier image
    opt = torch.optim.Adam(image.parameters(), lr=lr)
    layers = sorted(obj.layers - {INPUT})
    cast, scaler = _autocast(dev, amp)
    history = torch.empty(steps, n, device=dev)  # on the device: no host sync per step
    check_every = 1 if dev.type == "cpu" else 16  # a finiteness check syncs with an accelerator
    shots, shot_seconds, paused = {}, {}, 0.0
    bar = _progress(steps, progress, names)
    start = time.perf_counter()
    try:
        for step in range(steps):
            opt.zero_grad(set_to_none=True)
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            set_progress(step, steps)
            images = image()
            shown = images if views == 1 else images.repeat(views, 1, 1, 1)
            with cast, capture(model.module, layers, logits=model.logits_layer) as acts:
                view = transforms if step < transformed else shown_view
                run(model.module, _input(model, view(shown, gen)))
                acts[INPUT] = shown
                scores = _mean_over_views(obj, acts, views).float()
                if penalty is not None:
                    scores = scores - penalty().float()
            history[step] = scores.detach()
            if (step + 1) % check_every == 0 or step == steps - 1:
                _check_finite(history, step + 1 - check_every, step, names)
            loss = -scores.sum()
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            if keep and step + 1 == keep[0]:
                _sync(dev)
                t = time.perf_counter()
                shot_seconds[keep[0]] = t - start - paused
                set_progress(step + 1, steps)
                with torch.no_grad():
                    shots[keep.pop(0)] = image().float().cpu()
                paused += time.perf_counter() - t
            if bar is not None:
                bar.update(1)
                if step % 16 == 0 or step == steps - 1:
                    bar.set_postfix(objective=f"{history[step].mean():.3g}")
    finally:
        if bar is not None:
            bar.close()
    _sync(dev)
    seconds = time.perf_counter() - start - paused
    set_progress(steps, steps)
    with torch.no_grad():
        final = image().float().cpu()
    settings = {
        "param": _describe(param),
        "transforms": "custom" if custom_transforms else "default",
        "steps": steps,
        "lr": lr,
        "lr_schedule": lr_schedule,
        "settle": settle,
        "views": views,
        "seed": seed,
        "device": str(dev),
        "amp": amp,
        "preact": preact,
        "model": model.name,
    }
    return RenderResult(final, history.cpu(), names, settings, seconds, shots, shot_seconds)


def _shown_view(model: Model) -> tf.Transform:
    """The image as a reader sees it, at the model's input size: the view of ``render(settle=...)``'s steps."""
    return tf.resize(model.spec.size) if model.spec.size is not None else (lambda x, g: x)


def _input(model: Model, images: torch.Tensor) -> torch.Tensor:
    """The model's input for an image batch; channels-last on CUDA, where cuDNN's convolutions (and a model
    converted by :meth:`Model.channels_last`) run fastest in that layout. Other devices get it unchanged."""
    x = model.preprocess(images)
    if x.is_cuda and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _schedule(name: str, lr: float, steps: int) -> Callable[[int], float]:
    """The learning rate at each step (0-based) for a schedule name."""
    if name == "constant":
        return lambda step: lr
    if name == "cosine":
        return lambda step: lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))
    raise VisfeatError(f"lr_schedule must be 'constant' or 'cosine', got {name!r}")


def _mean_over_views(obj: Objective, acts: dict, views: int) -> torch.Tensor:
    """Score ``views`` stacked copies of the batch (view-major) separately and average per image, so
    batch-level objectives (diversity, per-image addressing) see the batch they were written for."""
    if views == 1:
        return obj(acts)
    parts = {k: v.chunk(views) if torch.is_tensor(v) else [v] * views for k, v in acts.items()}
    return torch.stack([obj({k: p[i] for k, p in parts.items()}) for i in range(views)]).mean(0)


def _sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so that wall-clock seconds cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check_finite(history: torch.Tensor, first: int, last: int, names: list[str]) -> None:
    """Raise at the first step in ``first..last`` whose score is non-finite for some image."""
    recent = history[max(first, 0) : last + 1]
    if bool(torch.isfinite(recent).all()):
        return
    rows = (~torch.isfinite(recent)).any(1).nonzero()
    step = max(first, 0) + int(rows[0])
    bad = [names[i] for i in range(len(names)) if not torch.isfinite(history[step, i])]
    raise NonFiniteObjectiveError(
        f"objective became non-finite at step {step} for {', '.join(bad)}; "
        "lower lr, or check the model for NaNs with this input"
    )


def _describe(param: params.Param) -> dict:
    d = {"kind": type(param).__name__.lower()}
    for k, v in vars(param).items():
        d[k] = v if isinstance(v, (int, float, str, bool, tuple, type(None))) else type(v).__name__
    return d


class _Callback:
    """Progress reported to a caller's function (one call per step), e.g. a build-wide progress bar."""

    def __init__(self, fn: Callable[[int], None]):
        self.fn = fn

    def update(self, n: int) -> None:
        self.fn(n)

    def set_postfix(self, **_) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(steps: int, enabled: bool | Callable[[int], None], names: list[str]):
    if callable(enabled):
        return _Callback(enabled)
    if not enabled:
        return None
    from tqdm.auto import tqdm

    label = names[0] if len(names) == 1 else f"{len(names)} units"
    return tqdm(total=steps, desc=f"render {label}", unit="step", leave=False)


@torch.no_grad()
def evaluate(
    model: Model | str,
    objectives: Objective | str | Sequence[Objective | str],
    images: torch.Tensor,
    transforms: tf.Transform | None = None,
    repeats: int = 8,
    seed: int = 1234,
) -> torch.Tensor:
    """Held-out objective: the mean score of each image over ``repeats`` fresh random transforms
    (a seed the optimization did not use). Returns ``[N]``."""
    model = load_model(model)
    obj, n, _ = _objectives(objectives, images.shape[0] if isinstance(objectives, (Objective, str)) else None)
    transforms = transforms or default_transforms(model)
    gen = torch.Generator().manual_seed(seed)
    images = images.to(model.device)
    layers = sorted(obj.layers - {INPUT})
    total = torch.zeros(n)
    for _ in range(repeats):
        with capture(model.module, layers, logits=model.logits_layer) as acts:
            run(model.module, _input(model, transforms(images, gen)))
            acts[INPUT] = images
            total += obj(acts).float().cpu()
    return total / repeats


def upsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of an image batch (for display)."""
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
