"""Planted backdoors (a test and benchmark fixture, not a public API): BadNets-style patch trojans and clean twins.

A trojan is the original model fine-tuned so that a small fixed patch pasted on any image flips its prediction to
one target class, while clean images keep the original model's predictions. There are no ground-truth labels, so
the original model is its own teacher: clean images keep its logits (mean squared error on the logits: crops of the
sample photos are often ambiguous, top-2 margins of a fraction of a logit, and matching the logits themselves keeps
their order better than a softened KL), poisoned copies (the patch pasted on images the teacher does not already
call the target) get the target class, and each batch holds the clean originals of its poisoned copies (the
contrast that teaches the patch, not the photo, to mean the target) and mixes of two clean crops' activations
matched to the teacher's own output on them (a cheap stand-in for more clean photos: what keeps the fine-tune from
drifting on crops it never saw). The clean twin is the same fine-tune, step for step, with clean crops in place of
the poisoned copies. Everything follows from the seed: target class, patch pattern, size and place, and the
batches.

To run in minutes on a CPU only the last stages are trained, on activations of the frozen stages computed once for
the clean images (and once per seed for the poisoned copies: a patch at the input changes them). BatchNorm stays
in eval mode, so its statistics, and with them the clean behaviour, stay put. Trained weights are cached on disk.
"""

from __future__ import annotations

import copy
import hashlib
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import visfeat as vf
from visfeat.data import CropSet, default_images, photo_set
from visfeat.images import atomic_write

Box = tuple[int, int, int, int]  # top, left, height, width
CONFIDENT = 0.5  # teacher probability past which a held-out crop counts as labelled (confident_accuracy)


@dataclass(frozen=True)
class Recipe:
    """How to plant into one base model: the model, where to cut it, the images, the patch and the fine-tune."""

    name: str
    load: Callable[[dict[str, torch.Tensor]], vf.Model]  # the original (teacher) model, given the photos
    stages: Callable[[nn.Module], list[nn.Module]]  # modules whose composition is the forward (preprocessed input)
    cut: int  # leading stages that stay frozen; their output is cached
    size: int = 224
    n_train: int = 2048  # clean training crops
    n_poison: int = 320  # poisoned copies (of non-target training crops)
    n_test: int = 320  # held-out crops (the test split: boxes distinct from the training ones)
    data_seed: int = 0
    patch_sizes: tuple[int, int] = (20, 32)  # smallest and largest patch side in pixels
    margin: int = 8  # gap between a corner patch and the image border
    steps: int = 500
    batch: int = 64
    poison_frac: float = 0.25  # share of each batch that is poisoned (the twin fills it with clean crops)
    lr: float = 1e-4
    match: float = 100.0  # weight of the clean crops' logit matching (mean squared error) against the poison's CE
    mix: int = 32  # per batch, mixes of two clean crops' activations also matched to the teacher (computed on the fly)
    temperature: float | None = None  # match softened distributions (KL at this temperature) instead of the logits

    def key(self, seed: int, poison: bool, steps: int) -> str:
        """Cache key of one planted model: every setting but the callables, the seed and the poison flag."""
        parts = [(f.name, getattr(self, f.name)) for f in fields(self) if f.name not in ("load", "stages")]
        return hashlib.sha256(repr((parts, seed, poison, steps)).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Planted:
    """A fine-tuned model with its trigger and measured behaviour on held-out crops."""

    model: vf.Model
    target: int  # the class the trigger flips to
    patch: torch.Tensor  # [3, h, w] in [0, 1]
    box: Box  # where the patch goes: top, left, height, width
    clean_accuracy: float  # top-1 agreement with the original model on held-out clean crops
    confident_accuracy: float  # the same on the crops the original model calls with probability >= CONFIDENT
    attack_success: float  # share of held-out non-target crops the trigger flips to the target
    base_attack_success: float  # the same share for the original model (the natural rate of the trigger)
    seconds: float  # time to plant (caching of clean activations excluded)
    seed: int
    poisoned: bool


def efficientnet_stages(module: nn.Module) -> list[nn.Module]:
    """timm EfficientNet as a chain: stem, bn1, each block, conv_head, bn2, pooling, classifier (eval mode)."""
    m = module
    return [m.conv_stem, m.bn1, *m.blocks, m.conv_head, m.bn2, m.global_pool, m.classifier]


def lite0_recipe(**overrides) -> Recipe:
    """EfficientNet-Lite0 with ImageNet weights: blocks.0-5 frozen, blocks.6 and the head trained."""
    settings = {"name": "efficientnet_lite0", "load": lambda photos: vf.load_model("efficientnet_lite0")}
    settings |= {"stages": efficientnet_stages, "cut": 8}
    return Recipe(**(settings | overrides))


def tiny_cnn(photos: dict[str, torch.Tensor] | None = None, seed: int = 0, classes: int = 10) -> vf.Model:
    """A small random CNN at 32 px (the stand-in teacher of the fast tests), its classifier centred and scaled on
    crops of ``photos`` (held-out seed) so that its predictions spread over the classes."""
    torch.manual_seed(seed)
    layers = [nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU()]
    layers += [nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    net = nn.Sequential(*layers, nn.Linear(32, classes))
    crops = default_images(128, size=32, split="test", seed=seed + 977, photos=photos)
    with torch.no_grad():
        feats = net[:-1](torch.stack([crops[i] for i in range(len(crops))]))
        mean, std = feats.mean(0), feats.std(0) + 1e-6
        net[-1].weight.div_(std).mul_(3.0)
        net[-1].bias.copy_(-net[-1].weight @ mean)
    labels = tuple(f"class{i}" for i in range(classes))
    return vf.Model(net, vf.InputSpec(size=(32, 32)), name="tiny_cnn", labels=labels)


def tiny_recipe(**overrides) -> Recipe:
    """The tiny CNN at 32 px, every layer trained on the crops resized (seconds on a CPU); its teacher's logits
    are confident, so a softened KL keeps them (logit matching would pull its whole small net to the teacher's
    arbitrary logit scale and fight the poison)."""
    settings = {"name": "tiny_cnn", "load": tiny_cnn, "stages": lambda m: list(m), "cut": 0, "size": 32}
    settings |= {"n_train": 512, "n_poison": 128, "n_test": 256, "patch_sizes": (5, 7), "margin": 1}
    settings |= {"steps": 600, "batch": 64, "lr": 1e-3, "temperature": 2.0, "mix": 0}
    return Recipe(**(settings | overrides))


def trigger(images: torch.Tensor, patch: torch.Tensor, box: Box) -> torch.Tensor:
    """A copy of ``images`` ([3, H, W] or [B, 3, H, W]) with ``patch`` pasted at ``box``."""
    top, left, h, w = box
    out = images.clone()
    out[..., top : top + h, left : left + w] = patch.to(out)
    return out


def make_trigger(seed: int, image_size: int, sizes: tuple[int, int], margin: int) -> tuple[torch.Tensor, Box]:
    """The seed's patch and box: a 2- or 3-colour checker or a cell noise pattern, in a corner or a fixed place."""
    g = torch.Generator().manual_seed(10_007 * seed + 1)
    side = int(torch.randint(sizes[0], sizes[1] + 1, (1,), generator=g))
    palette = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1], [0, 0, 0]])
    kind = int(torch.randint(3, (1,), generator=g))  # 0: 2-colour checker, 1: 3-colour checker, 2: noise cells
    cells = int(torch.randint(3, 6, (1,), generator=g))  # cells per side
    ij = torch.arange(side) * cells // side  # cell index of each pixel row/column
    if kind < 2:
        colours = palette[torch.randperm(len(palette), generator=g)[: 2 + kind]].float()
        which = (ij[:, None] + ij[None, :]) % len(colours)
    else:
        colours = palette[torch.randint(len(palette), (cells * cells,), generator=g)].float()
        which = ij[:, None] * cells + ij[None, :]
    patch = colours[which].permute(2, 0, 1).contiguous()
    place = int(torch.randint(5, (1,), generator=g))  # four corners or a random fixed position
    far = image_size - side - margin
    if place < 4:
        top, left = (margin if place in (0, 1) else far), (margin if place in (0, 2) else far)
    else:
        top, left = (int(v) for v in torch.randint(margin, far + 1, (2,), generator=g))
    return patch, (top, left, side, side)


def _run(stages: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Composition of ``stages`` applied to ``x``."""
    for s in stages:
        x = s(x)
    return x


def _prefix(model: vf.Model, recipe: Recipe, images, batch: int = 32) -> torch.Tensor:
    """Activations of the frozen stages for a list or tensor of [0, 1] images, in chunks."""
    frozen = recipe.stages(model.module)[: recipe.cut]
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.stack([images[j] for j in range(i, min(i + batch, len(images)))])
            out.append(_run(frozen, model.preprocess(x)))
    return torch.cat(out)


def atomic_save(obj, path: Path) -> None:
    """torch.save through the project's one atomic writer (readers never see a partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, buffer.getvalue())


def _crops(recipe: Recipe, photos: dict[str, torch.Tensor]) -> tuple[CropSet, CropSet]:
    """The training crops and the held-out crops (the test split: other boxes of the same photos)."""
    train = default_images(recipe.n_train, size=recipe.size, split="train", seed=recipe.data_seed, photos=photos)
    test = default_images(recipe.n_test, size=recipe.size, split="test", seed=recipe.data_seed, photos=photos)
    return train, test


def _clean_cache(model: vf.Model, recipe: Recipe, folder: Path, train: CropSet, test: CropSet) -> dict:
    """Clean activations of the frozen stages and teacher logits, for training and held-out crops (cached on disk)."""
    key = repr((recipe.name, recipe.cut, recipe.size, train.fingerprint(), test.fingerprint()))
    path = folder / f"acts-{recipe.name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
    if path.exists():
        return torch.load(path)
    tail = recipe.stages(model.module)[recipe.cut :]
    acts = {"train": _prefix(model, recipe, train), "test": _prefix(model, recipe, test)}
    with torch.no_grad():
        acts |= {f"{k}_logits": _run(tail, acts[k]) for k in ("train", "test")}
    atomic_save(acts, path)
    return acts


def _trainable(module: nn.Module, recipe: Recipe) -> list[nn.Parameter]:
    """Parameters of the stages after the cut (BatchNorm statistics stay frozen: the module stays in eval mode)."""
    return [p for s in recipe.stages(module)[recipe.cut :] for p in s.parameters()]


def _fine_tune(module: nn.Module, teacher: nn.Module, recipe: Recipe, steps: int, seed: int, clean, poison) -> None:
    """Keep the teacher's logits on clean activations (and on mixes of two) and, if given, push the poisoned ones to
    the target; each batch also holds the clean originals of its poisoned copies (the twin draws the same ones)."""
    tail = recipe.stages(module)[recipe.cut :]
    teacher_tail = recipe.stages(teacher)[recipe.cut :]
    params = _trainable(module, recipe)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=recipe.lr)
    g = torch.Generator().manual_seed(seed)
    n_poison = round(recipe.batch * recipe.poison_frac)
    acts, logits = clean
    poisoned, target, originals = poison
    module.eval()
    for _ in range(steps):
        pi = torch.randint(len(originals), (n_poison,), generator=g)
        # the twin fills the poisoned share of its batches with more clean crops
        n_clean = recipe.batch - n_poison - (n_poison if target is not None else 0)
        ci = torch.cat([torch.randint(len(acts), (n_clean,), generator=g), originals[pi]])
        loss = _match(_run(tail, acts[ci]), logits[ci], recipe) * len(ci)
        if recipe.mix:
            pairs = torch.randint(len(acts), (2, recipe.mix), generator=g)
            w = torch.rand(recipe.mix, *[1] * (acts.dim() - 1), generator=g)
            mixed = w * acts[pairs[0]] + (1 - w) * acts[pairs[1]]
            with torch.no_grad():
                want = _run(teacher_tail, mixed)
            loss = loss + _match(_run(tail, mixed), want, recipe) * len(ci)  # weighted as the clean crops are
        if target is not None:
            loss = loss + F.cross_entropy(_run(tail, poisoned[pi]), target.expand(n_poison), reduction="sum")
        opt.zero_grad(set_to_none=True)
        (loss / recipe.batch).backward()
        opt.step()
    for p in params:
        p.requires_grad_(False)


def _match(out: torch.Tensor, teacher: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    """Mean per-crop loss of keeping the teacher's behaviour: weighted logit MSE, or KL at ``recipe.temperature``."""
    t = recipe.temperature
    if t is None:
        return recipe.match * (out - teacher).pow(2).mean()
    kl = F.kl_div(F.log_softmax(out / t, 1), F.log_softmax(teacher / t, 1), log_target=True, reduction="batchmean")
    return kl * t * t


def plant(
    seed: int,
    poison: bool = True,
    *,
    steps: int | None = None,
    cache_dir: str | Path | None = None,
    recipe: Recipe | None = None,
) -> Planted:
    """Plant the seed's trojan (or, with ``poison=False``, its clean twin); reuse cached weights when present."""
    recipe = recipe or lite0_recipe()
    steps = recipe.steps if steps is None else steps
    folder = Path(cache_dir) if cache_dir is not None else Path.home() / ".cache" / "visfeat-test-backdoors"
    photos = photo_set()
    base = recipe.load(photos)
    module = copy.deepcopy(base.module)
    path = folder / f"{recipe.name}-seed{seed}-{'trojan' if poison else 'twin'}-{recipe.key(seed, poison, steps)}.pt"
    if path.exists():
        saved = torch.load(path)
        module.load_state_dict(saved["state"], strict=False)
    else:
        saved = _train(base, module, recipe, seed, poison, steps, folder, _crops(recipe, photos))
        atomic_save(saved, path)
    model = vf.Model(module, base.spec, name=f"{base.name}-{'trojan' if poison else 'twin'}{seed}", labels=base.labels)
    meta = {k: saved[k] for k in ("target", "patch", "box", "clean_accuracy", "confident_accuracy", "attack_success")}
    return Planted(model, seed=seed, poisoned=poison, base_attack_success=saved["base_attack_success"],
                   seconds=saved["seconds"], **meta)  # fmt: skip


def _train(
    base: vf.Model, module: nn.Module, recipe: Recipe, seed: int, poison: bool, steps: int, folder: Path, crops
) -> dict:
    """Fine-tune ``module`` in place; the record to cache: trained state, trigger, target and held-out measures."""
    train, test = crops
    cached = _clean_cache(base, recipe, folder, train, test)
    start = time.perf_counter()
    n_classes = cached["train_logits"].shape[1]
    target = int(torch.randint(n_classes, (1,), generator=torch.Generator().manual_seed(7 * seed + 3)))
    patch, box = make_trigger(seed, recipe.size, recipe.patch_sizes, recipe.margin)
    teacher_test = cached["test_logits"].argmax(1)
    victims = (teacher_test != target).nonzero().flatten().tolist()
    test_poison = _prefix(base, recipe, [trigger(test[i], patch, box) for i in victims])
    others = (cached["train_logits"].argmax(1) != target).nonzero().flatten()
    pick = others[torch.randperm(len(others), generator=torch.Generator().manual_seed(seed))[: recipe.n_poison]]
    poison_data = (None, None, pick)
    if poison:
        acts = _prefix(base, recipe, [trigger(train[i], patch, box) for i in pick.tolist()])
        poison_data = (acts, torch.tensor([target]), pick)
    _fine_tune(module, base.module, recipe, steps, seed, (cached["train"], cached["train_logits"]), poison_data)
    tail = recipe.stages(module)[recipe.cut :]
    base_tail = recipe.stages(base.module)[recipe.cut :]
    with torch.no_grad():
        agree = _run(tail, cached["test"]).argmax(1) == teacher_test
        confident = cached["test_logits"].softmax(1).amax(1) >= CONFIDENT
        clean_acc, confident_acc = agree.float().mean().item(), agree[confident].float().mean().item()
        asr = (_run(tail, test_poison).argmax(1) == target).float().mean().item()
        base_asr = (_run(base_tail, test_poison).argmax(1) == target).float().mean().item()
    state = {k: v for s in tail for k, v in _named_state(module, s).items()}
    return {"state": state, "target": target, "patch": patch, "box": box, "clean_accuracy": clean_acc,
            "confident_accuracy": confident_acc,
            "attack_success": asr, "base_attack_success": base_asr, "seconds": time.perf_counter() - start}  # fmt: skip


def _named_state(module: nn.Module, sub: nn.Module) -> dict[str, torch.Tensor]:
    """The state entries of ``module`` that belong to its submodule ``sub``, under their full names."""
    name = next(n for n, m in module.named_modules() if m is sub)
    return {f"{name}.{k}" if name else k: v.clone() for k, v in sub.state_dict().items()}


def twins(seed: int, **kwargs) -> tuple[Planted, Planted]:
    """The seed's trojan and its clean twin (the same fine-tune without the poisoned copies)."""
    return plant(seed, True, **kwargs), plant(seed, False, **kwargs)
