"""Feature accentuation: what in *this* photo a unit responds to (Hamblin et al., 2024, *Feature Accentuation*).

Feature visualization starts from noise and shows what a unit wants; accentuation starts from a photo (a top
dataset example, or one of yours), raises the unit and stays near the photo, so the change shows which of the
photo's own parts and textures drive the unit. It is ``render`` with three settings: a Fourier image seeded with
the photo's spectrum (:class:`visfeat.param.Seeded`: steps move in the same 1/f natural-image basis), the usual
random transforms, and the objective ``unit + closeness``, minus the mean squared pixel distance to the photo,
read on the untransformed image (:func:`visfeat.objectives.closeness`). See ``docs/accentuate.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from . import objectives as O
from .errors import VisfeatError
from .hooks import capture, run
from .images import iter_images
from .models import Model, load_model
from .param.seeded import Seeded
from .render import FOURIER_DECAY, RenderResult, evaluate, render
from .units import parse_unit

#: The defaults, measured on EfficientNet-Lite0 (``benchmarks/accentuate.py``, ``docs/accentuate.md``): 32 steps
#: at lr 0.05 raise a unit 2-10x over its top photos; a closeness weight of 1 (on the mean squared distance of
#: pixels in [0, 1], against the unit divided by its sensitivity) keeps the mean pixel change at 0.02-0.03 (PSNR
#: 28-31 dB) from blocks.2 to the logits; the first block's units move pixels more (0.03-0.07).
STEPS = 32
LR = 0.05
CLOSENESS = 1.0

Units = str | O.Objective | Sequence[str | O.Objective]
Images = torch.Tensor | str | Path | Sequence[str | Path | torch.Tensor]


def fit(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A ``[3, H, W]`` image centre-cropped to the aspect of ``size`` and resized to it (antialiased), in [0, 1]."""
    h, w = image.shape[-2:]
    th, tw = size
    if (h, w) == (th, tw):
        return image.float().clamp(0, 1)
    ch, cw = (h, round(h * tw / th)) if h * tw <= w * th else (round(w * th / tw), w)
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = image[None, :, top : top + ch, left : left + cw].float()
    return F.interpolate(crop, size=(th, tw), mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)


def seed_images(images: Images, size: tuple[int, int]) -> torch.Tensor:
    """The seed batch ``[B, 3, H, W]`` at ``size``: a tensor ``[B, 3, H, W]`` / ``[3, H, W]`` in [0, 1], an image
    file, a folder, or a list of them (each centre-cropped and resized)."""
    batch = [fit(_rgb(x), size) for x in iter_images(images)]
    if not batch:
        raise VisfeatError("accentuate() got no images; give a tensor [B, 3, H, W] in [0, 1] or image files")
    return torch.stack(batch)


def _rgb(image: torch.Tensor) -> torch.Tensor:
    """One image as ``[3, H, W]`` in [0, 1] (a grey ``[1, H, W]`` one repeated), or a clear error."""
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise VisfeatError(f"expected images [B, 3, H, W] or [3, H, W] in [0, 1], got an image of {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        raise VisfeatError("accentuate() takes float images in [0, 1]; divide uint8 pixels by 255")
    if not bool(torch.isfinite(image).all()) or image.min() < 0 or image.max() > 1:
        raise VisfeatError("accentuate() takes images with values in [0, 1]; divide 8-bit pixels by 255")
    return image.expand(3, -1, -1) if image.shape[0] == 1 else image


def _objectives(model: Model, unit: Units, n: int, preact: bool) -> tuple[O.Objective, O.Objective]:
    """The objective to raise over the batch (a unit string on its pre-activation when ``preact``) and the one
    that scores it (the unit's own activation); a list holds one unit per image."""
    one = isinstance(unit, (str, O.Objective))
    units = [unit] if one else list(unit)
    if not one and len(units) != n:
        raise VisfeatError(f"accentuate() got {len(units)} units for {n} images; give one unit, or one per image")
    raised, scored = [], []
    for u in units:
        if isinstance(u, str):
            parsed = parse_unit(u)
            parsed.validate(model)
            raised.append(parsed.objective(model, preact=preact))
            scored.append(parsed.objective())
        elif isinstance(u, O.Objective):
            raised.append(u)
            scored.append(u)
        else:
            raise VisfeatError(f"a unit is a unit string like 'blocks.4:12' or an Objective, got {type(u).__name__}")
    if one:  # one objective over the whole batch
        return raised[0], scored[0]
    return O.per_image(raised), O.per_image(scored)


def _identity(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return images


def activation(model: Model, objective: O.Objective | Sequence[O.Objective], images: torch.Tensor) -> torch.Tensor:
    """Each image's score ``[B]`` on the image as it is (one forward pass, no random transforms)."""
    return evaluate(model, objective, images, transforms=_identity, repeats=1)


def sensitivity(model: Model, objective: O.Objective, images: torch.Tensor) -> torch.Tensor:
    """Per image ``[B]``, what a change of the pixels by 1 RMS can first raise the objective by: the norm of its
    gradient times the square root of the pixel count (at the images as they are, no random transforms)."""
    x = images.to(model.device).detach().requires_grad_(True)
    layers = sorted(objective.layers - {O.INPUT})
    with torch.enable_grad(), capture(model.module, layers, logits=model.logits_layer) as acts:
        run(model.module, model.preprocess(x))
        acts[O.INPUT] = x
        scores = objective(acts)
    (grad,) = torch.autograd.grad(scores.sum(), x)  # the images are independent: one backward gives every gradient
    return grad.flatten(1).norm(dim=1).detach() * math.sqrt(grad[0].numel())


def normalized(objective: O.Objective, scale: torch.Tensor) -> O.Objective:
    """``objective`` divided per image by ``scale`` [B] (so that one closeness weight suits every unit)."""
    s = scale.clamp(min=1e-6)

    def fn(acts: O.Acts) -> torch.Tensor:
        scores = objective(acts)
        return scores / s.to(scores.device, scores.dtype)

    return O.Objective(fn, objective.layers, f"{objective.name} / sensitivity")


def distances(images: torch.Tensor, seeds: torch.Tensor) -> dict[str, list[float]]:
    """How far each image moved from its seed: mean absolute pixel change and PSNR (dB, pixels in [0, 1])."""
    diff = images.float() - seeds.float()
    mse = diff.pow(2).flatten(1).mean(1)
    psnr = [round(10 * math.log10(1 / m), 2) if m > 0 else math.inf for m in mse.tolist()]
    return {"distance": [round(v, 5) for v in diff.abs().flatten(1).mean(1).tolist()], "psnr": psnr}


def accentuate(
    model: Model | str,
    unit: Units,
    images: Images,
    *,
    steps: int = STEPS,
    lr: float = LR,
    closeness: float = CLOSENESS,
    seed: int = 0,
    preact: bool = True,
    scored: O.Objective | Sequence[O.Objective] | None = None,
    transforms=None,
    views: int = 1,
    settle: float | None = None,
    device: str | torch.device | None = None,
    progress: bool | Callable[[int], None] = False,
) -> RenderResult:
    """Raise ``unit`` in each of ``images`` while keeping it close to the photo: what in it the unit responds to.

    ``unit``: a unit string (``"blocks.4:12"``, read on its pre-activation when ``preact``) or an Objective, or one
    per image. ``images``: a tensor ``[B, 3, H, W]`` in [0, 1], image files or a folder, centre-cropped and resized
    to the model's input. ``closeness``: the weight of the mean squared pixel distance to the photo (0: none, the
    image drifts towards a feature visualization), against the unit divided by its :func:`sensitivity` at the photo,
    so that one weight suits units of any layer and scale. ``scored``: what the before/after values read (default: the
    unit's own activation). The result's ``settings["accentuate"]`` holds, per image, the ``before`` and ``after``
    values (one forward pass of the photo and of the result), the mean absolute pixel ``distance`` and the ``psnr``.
    Everything else is :func:`visfeat.render.render`'s (``transforms``, ``views``, ``settle``, ``device``).
    """
    model = load_model(model)
    if device is not None:
        model.to(device)
    if not (math.isfinite(closeness) and closeness >= 0):
        raise VisfeatError(f"closeness must be a weight of at least 0 (e.g. {CLOSENESS:g}), got {closeness}")
    seeds = seed_images(images, model.input_size)
    raised, plain = _objectives(model, unit, seeds.shape[0], preact)
    score = plain if scored is None else scored
    raised = normalized(raised, sensitivity(model, raised, seeds))
    objective = raised + O.closeness(seeds.to(model.device), closeness) if closeness else raised
    result = render(
        model,
        objective,
        param=Seeded(seeds, decay=FOURIER_DECAY),
        transforms=transforms,
        steps=steps,
        lr=lr,
        seed=seed,
        batch=seeds.shape[0],
        views=views,
        settle=settle,
        progress=progress,
        preact=preact,  # recorded only: the objectives above are built already (render leaves Objectives alone)
    )
    before, after = activation(model, score, seeds), activation(model, score, result.images)
    result.settings["accentuate"] = {
        "closeness": closeness,
        "preact": preact,
        "before": [round(v, 5) for v in before.tolist()],
        "after": [round(v, 5) for v in after.tolist()],
        **distances(result.images, seeds),
    }
    return result
