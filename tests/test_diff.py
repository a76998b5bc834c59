"""Model diffs (``visfeat.diff``): a pathway planted by hand into a copy of a small CNN is what the diff ranks first,
by weights and by activations over natural crops; identical models show no change; a base of another
architecture is refused with the fix named."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import conv_net

import visfeat as vf
from visfeat.data import default_images
from visfeat.diff import diff_layers, pair_model, side, weight_change
from visfeat.errors import VisfeatError

CHANNEL, TARGET = 5, 7


def _crops(n: int = 64) -> torch.Tensor:
    crops = default_images(n=n, size=32, split="test")
    return torch.stack([crops[i] for i in range(n)])


def _planted(base: vf.Model) -> vf.Model:
    """The base with one pathway changed: a new filter for channel 5 of conv "2" that class 7 now reads."""
    module = copy.deepcopy(base.module)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        module[2].weight[CHANNEL] += 0.5 * torch.randn(module[2].weight[CHANNEL].shape, generator=g)
        module[-1].weight[TARGET, CHANNEL] += 3.0
    return vf.Model(module, base.spec, name="tiny-changed")


def test_the_planted_pathway_ranks_first_by_weights_and_activations() -> None:
    base = conv_net()
    changed = _planted(base)
    d = diff_layers(changed, base, ["0", "2", "logits"], _crops(), progress=False)
    assert d["2"].ranked("weight")[0] == CHANNEL and d["2"].ranked("activation")[0] == CHANNEL
    assert d["logits"].ranked("weight")[0] == TARGET and d["logits"].ranked("activation")[0] == TARGET
    others = torch.ones(16, dtype=torch.bool)
    others[CHANNEL] = False
    assert float(d["2"].weight[others].abs().max()) == 0.0 and float(d["2"].activation[others].max()) < 1e-6
    assert float(d["0"].activation.max()) < 1e-6  # upstream of the change nothing moved
    assert float(d["2"].activation[CHANNEL]) > 0.5
    record = d["logits"].to_json(top=3)
    assert record["units"][0]["unit"] == TARGET and record["images"] == 64 and len(record["units"]) == 3


def test_identical_models_show_no_change_and_pooling_has_no_weights() -> None:
    base = conv_net()
    twin = vf.Model(copy.deepcopy(base.module), base.spec, name="copy")
    d = diff_layers(twin, base, ["2", "5"], _crops(16), progress=False)
    assert float(d["2"].activation.abs().max()) == 0.0 and float(d["2"].weight.abs().max()) == 0.0
    assert torch.isnan(weight_change(twin, base, "5")).all()  # AdaptiveAvgPool2d writes no weights of its own
    assert d["5"].ranked("weight") == list(range(16))  # NaN ranks last, order kept


def test_a_base_of_another_architecture_or_a_bad_rank_is_refused() -> None:
    base = conv_net()
    with pytest.raises(VisfeatError, match="same architecture"):
        diff_layers(conv_net(width=8), base, ["2"], _crops(8), progress=False)
    d = diff_layers(base, base, ["2"], _crops(8), progress=False)
    with pytest.raises(VisfeatError, match="activation, weight"):
        d["2"].ranked("size")
    with pytest.raises(VisfeatError, match=r"\[N, 3, H, W\]"):
        diff_layers(base, base, ["2"], torch.rand(4, 32, 32), progress=False)


def test_diff_visualization_opens_the_gap_between_the_models() -> None:
    """The picture that maximizes changed − base of the planted class opens the gap between the two models at least
    as far as the picture that maximizes the changed model alone; the pair reads each side through its own hooks.
    In this toy the base's logit barely moves with the picture (about -0.27 on both pictures), so the two objectives
    nearly coincide and their gaps differ by about 1%, either way with the seed; a side read through the wrong
    hooks, or the difference taken the wrong way round, falls far below."""
    base = conv_net()
    changed = _planted(base)
    pair = pair_model(changed, base)
    logit = vf.objectives.class_logit(TARGET)
    gap = side(logit, changed, "changed") - side(logit, changed, "base")
    kw = dict(steps=48, progress=False, preact=False, seed=0)
    diff_img = vf.render(pair, gap, **kw).images
    alone_img = vf.render(changed, logit, **kw).images
    with torch.no_grad():
        gaps = [float(changed(x)[0, TARGET] - base(x)[0, TARGET]) for x in (diff_img, alone_img)]
        both = pair(diff_img)
    assert torch.allclose(both[:, :10], changed(diff_img)) and torch.allclose(both[:, 10:], base(diff_img))
    assert gaps[0] > 0.95 * gaps[1] and gaps[0] > 0.5
