"""Feature accentuation: the seeded parameterization starts at the photo, the closeness term measures the distance to
it on the untransformed image, ``accentuate`` raises a real unit of Lite0 while staying near the photo (and drifts
further without the closeness term), and the CLI and a gallery with ``accentuate = 1`` write what they promise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import visfeat as vf
from visfeat import objectives as O
from visfeat import param as P
from visfeat.accentuate import CLOSENESS, activation, seed_images
from visfeat.cli import main
from visfeat.errors import VisfeatError
from visfeat.gallery import SpecError, build_gallery, parse_spec
from visfeat.images import load_image, save_image
from visfeat.units import parse_unit

TESTS = Path(__file__).parent
UNIT = "blocks.2:5"  # an early unit: the forward pass stops after blocks.2, so a step is cheap
STEPS = 12


@pytest.fixture(scope="module")
def lite0():
    return vf.load_model("efficientnet_lite0")


@pytest.fixture(scope="module")
def photo(lite0) -> torch.Tensor:
    from skimage import data

    cat = torch.from_numpy(data.chelsea().copy()).permute(2, 0, 1).float() / 255
    return seed_images(cat, lite0.input_size)  # [1, 3, 224, 224]


@pytest.fixture(scope="module")
def runs(lite0, photo):
    """The default closeness and none, on the same photo, steps and seed."""
    return {w: vf.accentuate(lite0, UNIT, photo, steps=STEPS, closeness=w) for w in (CLOSENESS, 0.0)}


# --- the seeded parameterization and the closeness term ----------------------------------------------------


@pytest.mark.parametrize("decorrelate", [True, False])
def test_seeded_param_starts_at_the_seed_and_learns(decorrelate):
    seeds = torch.rand(2, 3, 24, 40, generator=torch.Generator().manual_seed(0))
    image = P.seeded(seeds, decay=1.05, decorrelate=decorrelate).build(2, torch.Generator(), "cpu")
    x = image()
    assert x.shape == seeds.shape
    assert (x - seeds).abs().max() < 1.1e-3  # the seed itself, up to the sigmoid's clamp at eps = 1e-3
    x[:, 0].mean().backward()
    assert image.spectrum.grad is not None and image.spectrum.grad.abs().sum() > 0
    one = P.Seeded(seeds[:1]).build(3, torch.Generator(), "cpu")()  # one seed repeated over a batch
    assert one.shape[0] == 3 and torch.allclose(one[0], one[2])


def test_seeded_param_refuses_bad_seeds():
    with pytest.raises(VisfeatError, match=r"in \[0, 1\]"):
        P.seeded(torch.full((1, 3, 8, 8), 255.0))
    with pytest.raises(VisfeatError, match=r"RGB \[B, 3, H, W\]"):
        P.seeded(torch.rand(1, 4, 8, 8))
    with pytest.raises(VisfeatError, match="one seed per image"):
        P.seeded(torch.rand(2, 3, 8, 8)).build(3, torch.Generator())
    with pytest.raises(VisfeatError, match="images="):
        P.create("seeded")
    assert isinstance(P.create("seeded", images=torch.rand(3, 8, 8)), P.Seeded)


def test_closeness_is_minus_the_mean_squared_distance_per_image():
    seeds = torch.rand(2, 3, 8, 8)
    moved = seeds.clone()
    moved[1] += 0.1
    score = O.closeness(seeds, weight=3.0)({O.INPUT: moved})
    assert score.shape == (2,)
    assert score[0] == 0 and score[1] == pytest.approx(-3.0 * 0.01, rel=1e-4)
    with pytest.raises(VisfeatError, match="one target per image"):
        O.closeness(seeds)({O.INPUT: torch.rand(2, 3, 4, 4)})


def test_render_scores_closeness_on_the_untransformed_image(lite0, photo):
    """One step at a tiny lr: the image is still the photo, so the closeness term reads ~0 despite the random
    transforms (they would shift the picture by pixels)."""
    obj = O.closeness(photo, 1.0)
    r = vf.render(lite0, obj, param=P.seeded(photo), steps=1, lr=1e-6, progress=False)
    assert r.history[0, 0].abs() < 1e-6


# --- accentuate on a real unit --------------------------------------------------------------------------------


def test_accentuate_raises_the_unit_and_stays_close(runs, lite0, photo):
    r = runs[CLOSENESS]
    a = r.settings["accentuate"]
    before, after = a["before"][0], a["after"][0]
    assert after > before + 3 and after > 1.5 * before, a  # clearly raised
    assert a["distance"][0] < 0.05 and a["psnr"][0] > 25, a  # and still the photo
    plain = parse_unit(UNIT).objective()
    assert activation(lite0, plain, r.images)[0] == pytest.approx(after, rel=1e-3)  # the reported value is real
    assert vf.evaluate(lite0, plain, r.images)[0] > vf.evaluate(lite0, plain, photo)[0] + 2  # held out too
    assert r.images.shape == photo.shape and r.settings["steps"] == STEPS


def test_without_closeness_the_image_drifts_further(runs):
    free, kept = runs[0.0].settings["accentuate"], runs[CLOSENESS].settings["accentuate"]
    assert free["distance"][0] > 1.5 * kept["distance"][0], (free, kept)


def test_accentuate_takes_files_and_refuses_bad_input(lite0, photo, tmp_path):
    path = tmp_path / "cat.png"
    save_image(photo[0], path)
    assert seed_images([path, str(path)], lite0.input_size).shape == (2, 3, 224, 224)
    with pytest.raises(VisfeatError, match="one unit, or one per image"):
        vf.accentuate(lite0, [UNIT, UNIT], photo, steps=1)
    with pytest.raises(VisfeatError, match="closeness"):
        vf.accentuate(lite0, UNIT, photo, steps=1, closeness=-1)
    with pytest.raises(VisfeatError, match="divide 8-bit pixels by 255"):
        vf.accentuate(lite0, UNIT, photo * 255, steps=1)


# --- the CLI ------------------------------------------------------------------------------------------------


def test_cli_writes_the_accentuation_and_its_numbers(photo, tmp_path, capsys):
    img = tmp_path / "in" / "cat.png"
    img.parent.mkdir()
    save_image(photo[0], img)
    out = tmp_path / "out"
    args = ["accentuate", "efficientnet_lite0", UNIT, str(img), "-o", str(out), "--steps", "3", "--no-progress"]
    assert main(args) == 0
    result = load_image(out / "cat_accentuated.png")
    assert result.shape == (3, 224, 224)
    summary = json.loads((out / "accentuate.json").read_text())
    row = summary["images"][0]
    assert summary["unit"] == UNIT and row["file"] == "cat_accentuated.png"
    assert row["after"] > row["before"] and 0 < row["distance"] < 0.05
    assert summary["settings"]["steps"] == 3 and "closeness" in summary["settings"]
    assert main(["accentuate", "efficientnet_lite0", "blocks.2:999", str(img), "-o", str(tmp_path / "bad")]) == 2
    assert "out of range" in capsys.readouterr().err and not (tmp_path / "bad").exists()


# --- the gallery stage --------------------------------------------------------------------------------------

SPEC = """model = "gallery_model:tiny_gray"
[images]
n = 12
k = 2
[render]
steps = 2
batch_size = 3
diverse = 0
accentuate = 1
[[layers]]
name = "3"
units = "0-3"
[[layers]]
name = "logits"
units = [1, 2]
render = { accentuate = 0 }
"""


def test_gallery_accentuates_top_examples_on_unit_pages_and_in_the_manifest(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))  # gallery_model:tiny_gray
    spec = parse_spec(SPEC, "tiny.toml")
    site = tmp_path / "site"
    report = build_gallery(spec, site, progress=False)
    assert report.ran["accentuate"] == 2  # 4 units in batches of 3; the logits have accentuate = 0
    manifest = json.loads((site / "manifest.json").read_text())
    channels, classes = manifest["sections"]
    for u in channels["units"]:
        (acc,) = u["accentuations"]
        assert set(acc) == {"example", "file", "before", "after", "distance"}
        assert load_image(site / acc["file"]).shape[-2:] == (32, 32)
        page = (site / u["files"]["page"]).read_text()
        assert "Show what the unit responds to in each photo" in page
        assert Path(acc["file"]).name in page
        assert page.index("Top patches") < page.index("Show what the unit responds to")  # beside the examples
    assert all("accentuations" not in u for u in classes["units"])
    assert sum(build_gallery(spec, site, progress=False).ran.values()) == 0  # cached like every stage


def test_gallery_spec_refuses_a_negative_count():
    with pytest.raises(SpecError, match=r"render\.accentuate: must be at least 0"):
        parse_spec(SPEC.replace("accentuate = 1", "accentuate = -1"), "tiny.toml")
