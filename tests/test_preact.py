"""Pre-activation objectives (visfeat.preact): units whose layer ends in ReLU/GELU/BN+act are optimized on
the activation's input, so units that start dead still move; other units render exactly as before."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import visfeat as vf
from visfeat import objectives as O
from visfeat import param as P
from visfeat.data import default_images
from visfeat.preact import preactivation_layer
from visfeat.render import evaluate, render
from visfeat.units import Unit, parse_unit, preact_objective


def _photos(n: int, size: int) -> torch.Tensor:
    """``n`` random crops of the photos that packages ship, ``[n, 3, size, size]``."""
    crops = default_images(n=n, size=size)
    return torch.stack([crops[i] for i in range(len(crops))])


def _red_detector(inplace: bool = False) -> vf.Model:
    """conv "0" -> ReLU "1" -> pool -> linear. Channel 0 answers red minus the mean of green and blue, minus a
    bias: dead for a grey image, alive on red parts of photos."""
    conv = nn.Conv2d(3, 4, 3)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=torch.Generator().manual_seed(0)) * 0.1)
        conv.weight[0] = torch.tensor([1.0, -0.5, -0.5])[:, None, None]
        conv.bias.zero_()
        conv.bias[0] = -0.3
    net = nn.Sequential(conv, nn.ReLU(inplace=inplace), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    return vf.load_model(net, vf.InputSpec(size=(32, 32)))


def test_preact_revives_a_dead_relu_channel():
    model = _red_detector()
    best_photo = float(evaluate(model, "1:0", _photos(32, 32), repeats=1).max())
    fast = dict(param=P.fourier(32), steps=32, lr=0.5, progress=False)
    on = render(model, "1:0", **fast)
    off = render(model, "1:0", preact=False, **fast)
    assert on.names == ["channel(0:0)[preact of 1:0]"] and off.names == ["channel(1:0)"]
    assert on.settings["preact"] is True and off.settings["preact"] is False
    assert torch.all(off.history == 0)  # no gradient through a ReLU that is off everywhere
    assert float(evaluate(model, "1:0", off.images)) == 0
    assert float(evaluate(model, "1:0", on.images)) > max(best_photo, 1.0)


def test_neurons_keep_their_position_and_objectives_are_left_alone():
    model = _red_detector()
    x = torch.rand(2, 3, 32, 32)
    acts = model.activations(x, ["0", "1"])
    for text, plain in [("1:0@3,5", O.neuron("0", 0, 3, 5)), ("1:2@center", O.neuron("0", 2))]:
        pre = parse_unit(text).objective(model)
        assert pre.layers == {"0"}
        torch.testing.assert_close(pre(acts), plain(acts))
    assert parse_unit("1:0@3,5").objective(model, preact=False).layers == {"1"}
    assert parse_unit("1:0").objective().layers == {"1"}  # without a model: as before
    assert parse_unit("0:0").objective(model).name == "channel(0:0)"  # a conv: nothing to skip
    mine = O.channel("1", 0)
    r = render(model, [mine, "1:0"], param=P.fourier(32), steps=1, progress=False)
    assert r.names == ["channel(1:0)", "channel(0:0)[preact of 1:0]"]


def test_inplace_relu_does_not_overwrite_the_pre_activation():
    model = _red_detector(inplace=True)
    acts = model.activations(torch.rand(2, 3, 32, 32), ["0", "1"])
    assert acts["0"].min() < 0  # Model turned the in-place ReLU off
    assert preactivation_layer(model, "1") == ("0", 1.0)


class _Functional(nn.Module):
    """A block whose forward() ends in F.gelu, and a ReLU module called twice (a hook sees only its first call)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.conv(self.relu(self.relu(x) - 0.5)))


def test_functional_activation_and_shared_modules():
    model = vf.load_model(nn.Sequential(_Functional(), nn.Conv2d(4, 2, 1)), vf.InputSpec(size=(16, 16)))
    assert preactivation_layer(model, "0") == ("0.conv", 1.0)
    assert preactivation_layer(model, "0.relu") is None  # called twice
    assert preact_objective(model, Unit("1", 0)) is None


def test_token_units_read_the_mlp_input():
    model = vf.load_model("timm:vit_tiny_patch16_224", pretrained=False)
    x = torch.rand(1, 3, 224, 224)
    acts = model.activations(x, ["blocks.1.mlp.fc1"])
    for at in ["mean", "cls", "patch=3,4"]:
        obj = parse_unit(f"blocks.1.mlp.act:7@{at}").objective(model)
        assert obj.layers == {"blocks.1.mlp.fc1"} and obj.name.endswith(f"[preact of blocks.1.mlp.act:7@{at}]")
        torch.testing.assert_close(obj(acts), vf.vit.channel("blocks.1.mlp.fc1", 7, at)(acts))
    for text in ["blocks.1:7@cls", "blocks.1.attn:h1@cls", "blocks.1.mlp:7@mean"]:  # no final activation
        assert parse_unit(text).objective(model).name == parse_unit(text).objective().name


@pytest.fixture(scope="module")
def lite0() -> vf.Model:
    return vf.load_model("efficientnet_lite0")


def test_fused_batchnorm_act_on_lite0(lite0):
    bn = lite0.module.blocks[1][0].bn1  # BatchNormAct2d with ReLU6; channel 79 has a negative scale
    assert type(bn).__name__ == "BatchNormAct2d" and isinstance(bn.act, nn.ReLU6) and bn.weight[79] < 0
    assert bn.weight[3] > 0
    x = torch.rand(2, 3, 64, 64)
    acts = lite0.activations(x, ["blocks.1.0.conv_pw"])
    for c, sign in [(3, 1.0), (79, -1.0)]:
        obj = parse_unit(f"blocks.1.0.bn1:{c}").objective(lite0)
        assert obj.layers == {"blocks.1.0.conv_pw"}
        torch.testing.assert_close(obj(acts), sign * O.channel("blocks.1.0.conv_pw", c)(acts))
    assert parse_unit("bn2.act:0").objective(lite0).layers == {"conv_head"}  # the activation inside bn2
    # bn2:0 is zero after its ReLU6 for the initial image: only its pre-activation moves
    fast = dict(param=P.fourier(64), steps=8, progress=False)
    on, off = render(lite0, "bn2:0", **fast), render(lite0, "bn2:0", preact=False, **fast)
    assert on.names == ["channel(conv_head:0)[preact of bn2:0]"]
    assert float(evaluate(lite0, "bn2:0", off.images)) == 0 < float(evaluate(lite0, "bn2:0", on.images))


def test_units_without_a_final_nonlinearity_render_exactly_as_before(lite0):
    units = ["blocks.4:7", "blocks.4:7@3,5", "conv_head:3", "logit:espresso"]
    fast = dict(param=P.fourier(48), steps=3, progress=False)
    on, off = render(lite0, units, **fast), render(lite0, units, preact=False, **fast)
    assert (
        on.names
        == off.names
        == ["channel(blocks.4:7)", "neuron(blocks.4:7@3,5)", "channel(conv_head:3)", "class_logit(espresso)"]
    )
    assert torch.equal(on.images, off.images) and torch.equal(on.history, off.history)


@pytest.mark.slow
def test_dinov2_gelu_neuron_that_starts_dead_beats_the_photos():
    """``blocks.9.mlp.act:1000@mean`` starts below GELU's knee: plain gradient ascent pushes it further down
    (-0.0003 after 256 steps); on its pre-activation (fc1) it rises above every photo crop in 16 steps."""
    model = vf.load_model("dinov2_vits14_imgfocus")
    unit = "blocks.9.mlp.act:1000@mean"
    r = render(model, unit, steps=16, progress=False)  # default (ViT) settings, few steps
    assert r.names == [f"token_channel(blocks.9.mlp.fc1:1000@mean)[preact of {unit}]"]
    best_photo = float(evaluate(model, unit, _photos(32, 224), repeats=1).max())
    assert float(evaluate(model, unit, r.images, repeats=2)) > max(best_photo, 0.2)
