"""The path check: planted fooling circuits (tests/planted.py) are flagged, the same models' normal units are not."""

from __future__ import annotations

import planted
import pytest
import torch

import visfeat as vf
from visfeat.errors import VisfeatError
from visfeat.hooks import capture, run
from visfeat.path_similarity import PathCheck, path_checks, upstream_layers
from visfeat.units import parse_unit


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    return planted.natural_images(192, seed=1)


def _top(model, unit: str, photos: torch.Tensor, k: int = 8) -> torch.Tensor:
    """The unit's top ``k`` photos (the natural examples the gallery would show)."""
    obj = parse_unit(unit).objective()
    with torch.no_grad(), capture(model.module, obj.layers, logits=model.logits_layer) as acts:
        run(model.module, model.preprocess(photos))
        values = obj(acts)
    return photos[values.topk(k).indices]


def _checks(model, units, photos):
    everything = units["fooled"] + units["normal"]
    pictures = vf.render(model, everything, preset="draft", progress=False).images
    checks = path_checks(model, everything, pictures, [_top(model, u, photos) for u in everything])
    return dict(zip(everything, checks, strict=True))


@pytest.mark.parametrize(
    "make",
    [
        lambda: planted.fooled_cnn("blue-yellow diagonal", depth=1),
        lambda: planted.fooled_cnn("magenta-green stripes", depth=2),
        lambda: planted.fooled_vit("red-green horizontal"),
    ],
    ids=["cnn-depth1", "cnn-depth2", "token-model"],
)
def test_planted_fooling_circuits_are_flagged_and_normal_units_are_not(make, photos):
    model, units = make()
    checks = _checks(model, units, photos)
    for unit in units["fooled"]:
        assert checks[unit].flagged(), f"{unit}: {checks[unit]}"
    for unit in units["normal"]:
        assert not checks[unit].flagged(), f"{unit}: {checks[unit]}"
        assert checks[unit].score > 0.8


def test_the_planted_pattern_is_what_photos_barely_use(photos):
    """The fixture's premise: on photos the fooled unit is its natural channel's; on its picture, the pattern's."""
    model, units = planted.fooled_cnn()
    feats = model.module.act1(model.preprocess(_top(model, units["fooled"][0], photos)))
    weight = model.module.conv2.weight[planted.FOOLED, :, 1, 1]
    share = (weight[planted.NATURAL] * feats[:, planted.NATURAL].mean()) / (weight * feats.mean((0, 2, 3))).sum()
    assert share < 0.2  # measured 0.15: photos reach it mostly through the natural channel


def test_upstream_layers_pick_siblings_then_parents_and_skip_the_preactivation():
    model, _ = planted.fooled_cnn(depth=2)
    assert upstream_layers(model, "act3") == ["act1", "conv2", "act2"]  # conv3 feeds act3's ReLU: same channels
    assert upstream_layers(model, "logits") == ["conv2", "act2", "conv3", "act3"][-3:]
    lite = vf.load_model("efficientnet_lite0")
    assert upstream_layers(lite, "blocks.4") == ["blocks.1", "blocks.2", "blocks.3"]
    assert upstream_layers(lite, "blocks.0") == ["conv_stem", "bn1"]
    with pytest.raises(VisfeatError, match="no layer before"):
        upstream_layers(model, "act1.conv")


def test_a_picture_on_the_photos_path_scores_like_a_photo(photos):
    """A photo checked against the other top photos scores about 1; the check round-trips through JSON."""
    model, units = planted.fooled_cnn()
    unit = units["normal"][0]
    top = _top(model, unit, photos, k=9)
    check = path_checks(model, [unit], top[:1], [top[1:]])[0]
    assert 0.8 < check.score < 1.25 and not check.flagged()
    assert PathCheck.from_json(check.to_json()).score == pytest.approx(check.score, abs=1e-3)


def test_mismatched_inputs_are_refused(photos):
    model, units = planted.fooled_cnn()
    with pytest.raises(VisfeatError, match="one visualization and one set"):
        path_checks(model, units["normal"], photos[:1], [photos[:4]] * len(units["normal"]))
