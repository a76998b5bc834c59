"""The planted-backdoor fixture: a trojan is strong and keeps clean behaviour, its twin is not a trojan, planting is
deterministic and cached. The tests use the tiny CNN recipe; the EfficientNet-Lite0 trojans are planted and measured by
benchmarks/backdoor_plant.py (minutes each on a CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from backdoor import make_trigger, plant, tiny_recipe, trigger, twins


@pytest.fixture(scope="module")
def tiny_twins(tmp_path_factory: pytest.TempPathFactory):
    """The tiny recipe's trojan and twin for seed 0, planted once for the module (with its cache folder)."""
    folder = tmp_path_factory.mktemp("backdoors")
    return (*twins(0, recipe=tiny_recipe(), cache_dir=folder), folder)


def test_trigger_pastes_patch_only_in_box() -> None:
    """``trigger`` writes the patch into the box and leaves every other pixel (and the input) untouched."""
    patch, box = make_trigger(3, 224, (20, 32), 8)
    top, left, h, w = box
    assert patch.shape == (3, h, w) and 20 <= h <= 32 and 0 <= top <= 224 - h and 0 <= left <= 224 - w
    images = torch.rand(2, 3, 224, 224)
    out = trigger(images, patch, box)
    assert torch.equal(out[:, :, top : top + h, left : left + w], patch.expand(2, -1, -1, -1))
    out[:, :, top : top + h, left : left + w] = images[:, :, top : top + h, left : left + w]
    assert torch.equal(out, images)


def test_seeds_vary_the_trigger() -> None:
    """Different seeds give different patterns, sizes or places; the same seed gives the same trigger."""
    triggers = [make_trigger(s, 224, (20, 32), 8) for s in range(6)]
    assert len({(tuple(p.flatten().tolist()), b) for p, b in triggers}) == 6
    assert len({b[2] for _, b in triggers}) > 1 and len({b[:2] for _, b in triggers}) > 1
    p, b = make_trigger(2, 224, (20, 32), 8)
    assert torch.equal(p, triggers[2][0]) and b == triggers[2][1]


def test_trojan_is_strong_and_keeps_clean_behaviour(tiny_twins) -> None:
    """The trojan's trigger flips >= 90% of held-out crops; on the crops the original model calls confidently
    (its labelled crops) the trojan, like its twin, agrees with it on >= 90%."""
    trojan, twin, _ = tiny_twins
    assert trojan.poisoned and trojan.attack_success >= 0.9
    assert trojan.confident_accuracy >= 0.9 and twin.confident_accuracy >= 0.9


def test_twin_is_not_a_trojan(tiny_twins) -> None:
    """The twin has the same trigger and target, and the trigger works on it about as rarely as on the original."""
    trojan, twin, _ = tiny_twins
    assert not twin.poisoned and twin.target == trojan.target and twin.box == trojan.box
    assert torch.equal(twin.patch, trojan.patch)
    assert twin.attack_success <= twin.base_attack_success + 0.15 and twin.attack_success < 0.3


def test_planted_model_measures_on_raw_images(tiny_twins) -> None:
    """The returned ``visfeat.Model`` (not just the cached-activation path) carries the backdoor."""
    trojan, twin, _ = tiny_twins
    from visfeat.data import default_images

    crops = default_images(64, size=32, split="test", seed=0)
    x = torch.stack([crops[i] for i in range(len(crops))])
    poisoned = trigger(x, trojan.patch, trojan.box)
    with torch.no_grad():
        hit = (trojan.model(poisoned).argmax(1) == trojan.target).float().mean().item()
        twin_hit = (twin.model(poisoned).argmax(1) == trojan.target).float().mean().item()
    assert hit >= 0.85 and twin_hit < 0.3
    assert not any(p.requires_grad for p in trojan.model.module.parameters())


def test_cache_is_reused_and_planting_is_deterministic(tiny_twins, tmp_path: Path) -> None:
    """A second plant loads the cached weights; planting from scratch elsewhere gives identical weights."""
    trojan, _, folder = tiny_twins
    files = sorted(folder.glob("tiny_cnn-seed0-trojan-*.pt"))
    assert len(files) == 1 and not list(folder.glob(".*"))  # no temporary file left
    stamp = files[0].stat().st_mtime_ns
    again = plant(0, recipe=tiny_recipe(), cache_dir=folder)
    assert files[0].stat().st_mtime_ns == stamp and again.seconds == trojan.seconds
    fresh = plant(0, recipe=tiny_recipe(), cache_dir=tmp_path)
    a, b = trojan.model.module.state_dict(), fresh.model.module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert fresh.attack_success == trojan.attack_success and fresh.clean_accuracy == trojan.clean_accuracy


def test_cache_key_follows_settings(tiny_twins) -> None:
    """Other steps or another seed are other cache entries, not the cached weights."""
    recipe = tiny_recipe()
    assert recipe.key(0, True, 10) != recipe.key(0, True, 11) != recipe.key(1, True, 10)
    assert recipe.key(0, True, 10) != recipe.key(0, False, 10)
