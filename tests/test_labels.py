"""Honest labels: a class label only with evidence that passes a test (a concentration among the top examples that
the image set's class mix makes unlikely; a promoted class that stands out in the unit's weights), measured
descriptors for early units, and a gallery whose every label names its evidence."""

from __future__ import annotations

import itertools
import json
import math
import random
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from visfeat.gallery.stages.examples import ExamplesView, Histogram
from visfeat.labels import (
    ALPHA,
    MARGIN,
    class_concentration,
    class_counts,
    descriptors,
    hypergeom_tail,
    kernel_look,
    look,
    weight_share,
)

TESTS = Path(__file__).parent


def _mix(share: dict[int, int], others: int, each: int, start: int = 100) -> dict[int, int]:
    """Images per class: the given classes plus ``others`` classes of ``each`` images."""
    return {**share, **{start + i: each for i in range(others)}}


# --- the class-concentration test -------------------------------------------------------------------------


def test_a_concentration_that_chance_gives_is_refused():
    mix = _mix({0: 300}, 70, 10)  # class 0 is 30% of 1000 images
    c = class_concentration([0, 0, 0, 101, 102, 103, 104, 105], mix)
    assert (c.cls, c.count, c.k) == (0, 3, 8)
    assert c.expected == pytest.approx(2.4)
    assert c.tail > 0.3 and c.p_value >= c.tail and not c.passes


def test_a_real_concentration_passes():
    mix = _mix({7: 20}, 98, 10)  # class 7 is 2% of 1000 images
    c = class_concentration([7, 7, 7, 7, 7, 7, 7, 101], mix)
    assert (c.cls, c.count) == (7, 7) and c.expected == pytest.approx(0.16)
    assert c.p_value < 1e-6 and c.passes


def test_one_example_is_never_a_concentration_and_no_prediction_is_no_test():
    mix = _mix({5: 1}, 99, 10)
    c = class_concentration([5, 101, 102, 103], mix)
    assert c.count == 1 and not c.passes
    assert class_concentration([-1, -1], mix) is None
    assert class_counts(torch.tensor([3, 3, -1, 4])) == {3: 2, 4: 1}


def test_the_tail_is_the_exact_hypergeometric_tail_by_enumeration():
    population = [1] * 4 + [0] * 10  # 4 class images of 14
    for count in range(0, 6):
        hits = [sum(s) >= count for s in itertools.combinations(population, 5)]
        exact = Fraction(sum(hits), len(hits))
        assert hypergeom_tail(count, 5, 4, 14) == pytest.approx(float(exact), rel=1e-12)


def test_the_p_value_matches_a_simulation_and_is_a_valid_p_value():
    """Under the null (k images drawn at random from the set) the corrected p-value is at most t with
    probability at most t, and the uncorrected tail of a fixed class matches the simulated one."""
    mix = {0: 150, 1: 50, 2: 20, **{10 + i: 4 for i in range(70)}}  # 500 images
    images = [c for c, n in mix.items() for _ in range(n)]
    rng = random.Random(0)
    draws = [rng.sample(images, 8) for _ in range(4000)]
    sim = sum(d.count(1) >= 3 for d in draws) / len(draws)
    assert hypergeom_tail(3, 8, 50, 500) == pytest.approx(sim, abs=0.01)
    tested = [class_concentration(d, mix) for d in draws]
    for t in (0.01, 0.05, 0.2):
        assert sum(c.p_value <= t for c in tested) / len(tested) <= t + 0.01
    for top in ([2, 2, 2, 0, 0, 1, 10, 11], [2, 2, 2, 2, 0, 1, 10, 11], [1, 1, 1, 1, 0, 0, 2, 10]):
        c = class_concentration(top, mix)  # the majority's own tail is the statistic; the null simulated
        sim = sum(t.tail <= c.tail * (1 + 1e-9) for t in tested) / len(tested)
        assert sim - 0.01 <= c.p_value <= 2 * sim + 0.01
    c = class_concentration([2, 2, 2, 0, 0, 1, 10, 11], mix)  # 3 of a 4% class, but 70 classes of 4 images
    assert c.cls == 2 and not c.passes and c.tail < ALPHA < c.p_value  # (two of one of them is common)
    c = class_concentration([2, 2, 2, 2, 0, 1, 10, 11], mix)
    assert c.passes and c.p_value <= ALPHA


# --- the weight-share test --------------------------------------------------------------------------------


def test_a_peaked_unit_passes_and_a_flat_one_does_not():
    g = torch.Generator().manual_seed(0)
    flat = torch.randn(1000, generator=g)
    s = weight_share(flat)
    assert not s.passes and s.margin < MARGIN and s.share < 0.02
    peaked = flat * 0.1
    peaked[7] = 3.0
    s = weight_share(peaked)
    assert s.passes and s.cls == 7 and s.margin >= MARGIN and s.share > 0.05
    tie = flat * 0.1
    tie[3], tie[5] = 3.0, 2.9
    assert not weight_share(tie).passes  # two classes alike: no one class
    only = -torch.ones(10)
    only[2] = 0.5
    assert weight_share(only).passes and math.isinf(weight_share(only).margin)
    assert weight_share(-torch.ones(10)) is None


# --- descriptors ------------------------------------------------------------------------------------------


def _stripes(period: float, axis: str, size: int = 64) -> torch.Tensor:
    x = torch.arange(size).float()
    yy, xx = torch.meshgrid(x, x, indexing="ij")
    t = {"x": xx, "y": yy, "diag": xx + yy}[axis]
    return (0.5 + 0.5 * torch.sin(2 * math.pi * t / period))[None].expand(3, size, size).clone()


def test_a_red_picture_is_red_and_a_gray_one_gray():
    red = torch.zeros(3, 32, 32)
    red[0] = 0.9
    assert look(red).colour == "red"
    assert look(torch.full((3, 32, 32), 0.5)).colour is None
    assert look(torch.rand(1, 32, 32)).colour is None  # a grayscale picture
    assert descriptors(red).text.startswith("red, ")


def test_stripes_give_their_orientation_and_frequency():
    """The orientation is the stripes' own: 90° vertical, 0° horizontal, counter-clockwise as seen."""
    assert look(_stripes(8, "x")).orientation == pytest.approx(90, abs=1)
    assert look(_stripes(8, "y")).orientation == pytest.approx(0, abs=1)
    assert look(_stripes(8, "diag")).orientation == pytest.approx(45, abs=1)  # lower left to upper right
    fine, coarse = look(_stripes(4, "x")), look(_stripes(32, "x"))
    assert fine.frequency == pytest.approx(1 / 4, abs=0.02) and coarse.frequency == pytest.approx(1 / 32, abs=0.01)
    assert (fine.scale, coarse.scale) == ("fine", "coarse")
    assert "90°" in descriptors(_stripes(4, "x")).text and descriptors(_stripes(4, "x")).text.endswith("fine")
    noise = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0)) * 0.05 + 0.5
    assert look(noise).orientation is None and look(noise).colour is None


def test_a_red_green_checker_is_an_opponent_pair():
    x = torch.arange(64)
    yy, xx = torch.meshgrid(x, x, indexing="ij")
    on = ((xx // 8 + yy // 8) % 2).bool()
    img = torch.zeros(3, 64, 64)
    img[0][on] = 1.0
    img[1][~on] = 1.0
    d = look(img)
    assert d.colour == "red–green" and d.orientation is None


def test_a_kernel_has_the_colour_and_orientation_that_drive_it():
    kernel = torch.zeros(3, 7, 7)
    kernel[:, :, 3] = torch.tensor([1.0, -0.5, -0.5])[:, None]  # a vertical bar: red on, cyan off
    k = kernel_look(kernel)
    assert k.orientation == pytest.approx(90, abs=1) and k.colour == "red"
    assert kernel_look(kernel.mean(0, keepdim=True).expand(3, 7, 7)).colour is None  # no colour energy
    assert descriptors(_stripes(8, "x"), kernel).kernel == k


# --- the views and a gallery ------------------------------------------------------------------------------


def test_the_examples_view_labels_only_a_passing_concentration():
    hist = Histogram((), (), 1, 1, 0.0, 1.0)
    chance = class_concentration([0, 0, 0, 101, 102, 103, 104, 105], _mix({0: 300}, 70, 10))
    real = class_concentration([7, 7, 7, 7, 7, 7, 7, 101], _mix({7: 20}, 98, 10))
    view = ExamplesView([], [], [], hist, None, 0, [("flatworm", 3)], "channel", chance, "flatworm")
    assert view.label() is None and "what chance gives" in view.label_note()
    assert view.manifest()["examples_evidence"]["passes"] is False
    view = ExamplesView([], [], [], hist, None, 0, [("espresso", 7)], "channel", real, "espresso")
    assert view.label().text.startswith("sees espresso (7/8, p=") and "expects 0.2" in view.label_note()


SPEC = """model = "gallery_model:tiny_gray"
[images]
n = 40
k = 4
[render]
steps = 2
batch_size = 4
diverse = 0
[[layers]]
name = "1"
units = "0-3"
[[layers]]
name = "5"
units = "all"
[[layers]]
name = "logits"
units = [1, 2]
"""


@pytest.fixture(autouse=True)
def _importable(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))  # gallery_model:tiny_gray


def test_every_gallery_label_carries_its_evidence(tmp_path):
    from visfeat.gallery import build_gallery, parse_spec

    build_gallery(parse_spec(SPEC, "labels.toml"), tmp_path / "site", progress=False)
    site = tmp_path / "site"
    manifest = json.loads((site / "manifest.json").read_text())
    sections = {s["name"]: s for s in manifest["sections"]}
    for s in manifest["sections"]:
        for u in s["units"]:
            assert "label_evidence" in u and "label_source" in u
            ev = u["label_evidence"]
            if not u["label"]:
                assert ev is None and u["label_source"] is None
                continue
            assert ev["source"] == u["label_source"]
            if ev["source"] == "examples":
                assert ev["passes"] and ev["p_value"] <= ev["alpha"] and "p=" in u["label"]
            elif ev["source"] == "weights":
                assert ev["passes"] and "share" in u["label"]
            else:
                assert ev["source"] == "describe" and u["descriptor"]["picture"]["scale"] in u["label"]
            page = (site / u["files"]["page"]).read_text()
            assert "Label “" in page
    for u in sections["1"]["units"]:  # an early layer (stride 2): its picture and kernel are described
        assert u["descriptor"]["picture"] and u["descriptor"]["kernel"]
        assert u["label_source"] in ("describe", "examples", "weights")
        assert u["examples_evidence"]["k"] >= 1
    for u in sections["5"]["units"]:  # the last built layer: its weights to the classes are tested
        assert u["weights_evidence"]["name"] and u["weights_evidence"]["passes"] in (True, False)
    assert all(u["label_evidence"] is None for u in sections["logits"]["units"])
    unit = (site / sections["5"]["units"][0]["files"]["page"]).read_text()
    assert "<h3>Label</h3>" in unit and "<img src=x" not in unit
