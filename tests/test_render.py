"""render: result shapes, batching N objectives, determinism, non-finite objectives, amp on CPU, progress bar."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from visfeat import objectives as O
from visfeat import param as P
from visfeat import transforms as T
from visfeat.errors import NonFiniteObjectiveError, VisfeatError
from visfeat.models import InputSpec, Model
from visfeat.presets import PRESETS, get_preset
from visfeat.render import (
    FOURIER_CUTOFF,
    FOURIER_CUTOFF_LONG,
    FOURIER_DECAY,
    FOURIER_GROW,
    FOURIER_HEADROOM,
    LONG_RUN,
    RenderResult,
    default_param,
    default_transforms,
    evaluate,
    render,
)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.head = nn.Linear(16, 10)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.head(self.conv2(self.act1(self.conv1(x))).mean((2, 3)))


def _model() -> Model:
    return Model(Tiny(), InputSpec(size=(24, 24), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)), name="tiny")


FAST = dict(param=P.fourier(20), steps=6, progress=False)


def test_result_images_and_history():
    m = _model()
    r = render(m, "conv2:3", **FAST)
    assert isinstance(r, RenderResult)
    assert r.images.shape == (1, 3, 20, 20) and r.images.device.type == "cpu"
    assert r.images.min() >= 0 and r.images.max() <= 1
    assert r.history.shape == (6, 1) and torch.isfinite(r.history).all()
    assert torch.equal(r.final, r.history[-1])
    assert r.history[-1, 0] > r.history[0, 0]
    assert r.names == ["channel(conv2:3)"]
    assert r.settings["steps"] == 6 and r.settings["seed"] == 0 and r.settings["model"] == "tiny"
    assert r.settings["param"] == {
        "kind": "fourier", "size": 20, "sd": 0.01, "decay": 1.0, "decorrelate": True, "cutoff": None, "grow": 0.0,
        "headroom": 0.0
    }  # fmt: skip
    assert r.seconds > 0


def test_list_of_objectives_is_one_batch():
    m = _model()
    _ = m.layers  # the catalogue costs one dry forward, once per model (ViT defaults look at it)
    m.module.calls = 0
    objs = ["conv2:0", O.neuron("conv2", 1), "conv1:2", "logit:4"]
    r = render(m, objs, **FAST)
    assert r.images.shape == (4, 3, 20, 20) and r.history.shape == (6, 4)
    assert r.names == ["channel(conv2:0)", "neuron(conv2:1)", "channel(conv1:2)", "class_logit(4)"]
    assert m.module.calls == 6  # one forward per step for the whole batch
    assert (r.history[-1] > r.history[0]).all()
    # evaluate() scores image i on objective i
    own = evaluate(m, objs, r.images, transforms=lambda x, g: T.resize(24)(x, g), repeats=1)
    assert own.shape == (4,)
    torch.testing.assert_close(own[0], O.channel("conv2", 0)(m.activations(T.resize(24)(r.images, None), ["conv2"]))[0])
    with pytest.raises(VisfeatError, match="batch=3 but 4 objectives"):
        render(m, objs, batch=3, **FAST)


def test_batch_of_one_objective_gives_different_images():
    r = render(_model(), "conv2:5", batch=3, **FAST)
    assert r.images.shape == (3, 3, 20, 20) and r.names == ["channel(conv2:5)"] * 3
    assert (r.images[0] - r.images[1]).abs().max() > 1e-3


@pytest.mark.parametrize("param", [P.pixel(20), P.fourier(20), P.maco(20)], ids=["pixel", "fourier", "maco"])
def test_deterministic_for_a_fixed_seed(param):
    kwargs = dict(param=param, transforms=T.compose(T.standard(), T.resize(24)), steps=5, progress=False)
    a = render(_model(), ["conv2:3", "conv1:1"], seed=11, **kwargs)
    b = render(_model(), ["conv2:3", "conv1:1"], seed=11, **kwargs)
    c = render(_model(), ["conv2:3", "conv1:1"], seed=12, **kwargs)
    assert torch.equal(a.images, b.images) and torch.equal(a.history, b.history)
    assert not torch.equal(a.images, c.images)


def test_non_finite_objective_names_the_unit_and_step():
    steps = {"n": 0}

    def fn(acts):  # per_image() hands it image 1 only
        steps["n"] += 1
        v = acts["conv2"][:, 0].mean((1, 2))
        return v * float("nan") if steps["n"] >= 3 else v  # from the third step on it goes bad

    bad = O.Objective(fn, frozenset({"conv2"}), "exploding")
    with pytest.raises(NonFiniteObjectiveError, match=r"non-finite at step 2 for exploding"):
        render(_model(), [O.channel("conv2", 1), bad], **FAST)
    inf = O.Objective(lambda acts: acts["conv2"].mean((1, 2, 3)) / 0.0, frozenset({"conv2"}), "divided")
    with pytest.raises(NonFiniteObjectiveError, match=r"step 0 for divided.*lower lr"):
        render(_model(), inf, **FAST)
    # a per_image objective rendered as one objective over a batch of 2 (what render does with a list)
    both = O.per_image([O.channel("conv2", 1), O.channel("conv2", 2)])
    assert torch.isfinite(render(_model(), both, batch=2, **FAST).history).all()


def test_amp_on_cpu_is_a_clear_error():
    with pytest.raises(VisfeatError, match=r"amp='bf16' is for CUDA devices.*cpu.*Drop amp="):
        render(_model(), "conv2:0", amp="bf16", **FAST)


def test_bad_settings():
    with pytest.raises(VisfeatError, match="steps must be at least 1"):
        render(_model(), "conv2:0", param=P.pixel(8), steps=0, progress=False)
    with pytest.raises(VisfeatError, match=r"unknown layer 'conv3'; closest: conv2"):
        render(_model(), "conv3:0", **FAST)


def test_bad_learning_rates_are_clear_errors_before_any_step():
    for lr in (float("nan"), float("inf"), -0.05, 0.0):
        with pytest.raises(VisfeatError, match="lr must be a positive finite learning rate"):
            render(_model(), "conv2:0", param=P.pixel(8), steps=2, lr=lr, progress=False)


def test_a_preset_fills_what_is_not_given():
    m = _model()
    draft = render(m, "conv2:1", preset="draft", param=P.fourier(20), progress=False)
    table = get_preset("draft")
    same = dict(steps=table.steps, lr=table.lr, views=table.views, lr_schedule=table.lr_schedule, settle=table.settle)
    explicit = render(m, "conv2:1", param=P.fourier(20), progress=False, **same)
    assert torch.equal(draft.images, explicit.images) and torch.equal(draft.history, explicit.history)
    assert {k: draft.settings[k] for k in same} == same
    heavy = get_preset("heavy")
    mixed = render(m, "conv2:1", preset="heavy", steps=3, views=1, param=P.fourier(20), progress=False)
    assert mixed.settings["steps"] == 3 and mixed.settings["views"] == 1  # given: kept
    assert mixed.settings["lr_schedule"] == heavy.lr_schedule and mixed.settings["lr"] == heavy.lr  # from the preset
    plain = render(m, "conv2:1", param=P.fourier(20), steps=4, progress=False)
    assert plain.settings["lr_schedule"] == get_preset("default").lr_schedule


def test_an_unknown_preset_names_the_closest_and_the_table_is_read_only():
    with pytest.raises(VisfeatError, match="unknown preset 'drat'; closest: draft"):
        render(_model(), "conv2:1", preset="drat", **FAST)
    with pytest.raises(TypeError):
        PRESETS["fast"] = get_preset("draft")  # type: ignore[index]
    assert all(get_preset(name) is p and p.name == name for name, p in PRESETS.items())


def test_progress_bar_on_and_off(capsys):
    render(_model(), "conv2:0", param=P.pixel(8), steps=3, progress=False)
    assert "render" not in capsys.readouterr().err
    render(_model(), "conv2:0", param=P.pixel(8), steps=3, progress=True)
    assert "render channel(conv2:0)" in capsys.readouterr().err


def test_only_the_needed_layers_run():
    """An objective on conv1 never computes conv2 (early stop inside render)."""
    m = _model()
    _ = m.layers  # the catalogue's dry forward runs everything once; count after it
    seen = []
    m.module.conv2.register_forward_hook(lambda *_: seen.append(1))
    render(m, "conv1:0", **FAST)
    assert seen == []
    render(m, "conv2:0", **FAST)
    assert len(seen) == 6


def test_input_penalty_sees_the_untransformed_images():
    """``"input"`` is the parameterization's output, before transforms (20 px here, the model sees 24 px)."""
    shapes = []

    def fn(acts):
        shapes.append(tuple(acts["input"].shape))
        return -acts["input"].mean((1, 2, 3)) + acts["conv2"].mean((1, 2, 3))

    render(_model(), O.Objective(fn, frozenset({"input", "conv2"}), "pen"), **FAST)
    assert set(shapes) == {(1, 3, 20, 20)}


def _strided() -> Model:
    """A CNN whose layer "0" sees a 64 px picture at 16x16 (1/4: fine) and "2" at 4x4 (1/16: coarse)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 4, stride=4), nn.ReLU(), nn.Conv2d(4, 8, 4, stride=4), nn.ReLU())
    net.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)))
    return Model(net, InputSpec(size=(64, 64)), name="strided")


def test_default_low_pass_only_for_coarse_layers():
    """A unit that sees the picture at 1/16 of its side or coarser gets the low-pass, a finer one the finest
    scales; class logits go by the model's coarsest map. A run of LONG_RUN steps or more gets the narrower band."""
    deep = _strided()
    assert default_param(deep, [O.channel("0", 0)]).cutoff is None
    assert default_param(deep, [O.channel("0", 0)]).grow == default_param(deep, [O.class_logit(3)]).grow == FOURIER_GROW
    assert default_param(deep, [O.channel("2", 0)]).cutoff == FOURIER_CUTOFF
    assert default_param(deep, [O.class_logit(3)]).cutoff == FOURIER_CUTOFF
    assert default_param(deep, [O.class_logit(3), O.channel("0", 0)]).cutoff is None  # the finest layer decides
    assert render(deep, "0:0", steps=1, progress=False).settings["param"]["cutoff"] is None
    assert render(deep, O.class_logit(3), steps=1, progress=False).settings["param"]["cutoff"] == FOURIER_CUTOFF
    assert default_param(deep, [O.class_logit(3)], steps=LONG_RUN - 1).cutoff == FOURIER_CUTOFF
    assert default_param(deep, [O.class_logit(3)], steps=LONG_RUN).cutoff == FOURIER_CUTOFF_LONG < FOURIER_CUTOFF
    assert default_param(deep, [O.channel("0", 0)], steps=LONG_RUN).cutoff is None  # fine units: every scale
    long = render(deep, O.class_logit(3), steps=LONG_RUN, progress=False)  # render passes its own steps
    assert long.settings["param"]["cutoff"] == FOURIER_CUTOFF_LONG
    toy = _model()  # 24 px, its coarsest map 12x12: the logits of a toy CNN keep the finest scales
    assert default_param(toy, [O.class_logit(3)]).cutoff is None


def test_render_tells_a_growing_image_its_progress():
    """A module with ``set_progress`` hears where the run is before every step (snapshots and the final picture: the
    steps behind them), so a coarse-to-fine image opens its band over the run; the final picture is drawn with the
    band fully open."""
    heard: list[tuple[int, int]] = []

    class Heard(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def set_progress(self, step: int, steps: int) -> None:
            heard.append((step, steps))
            self.inner.set_progress(step, steps)

        def forward(self) -> torch.Tensor:
            return self.inner()

    grow = P.fourier(20, cutoff=0.8, grow=2)

    class Spy:
        def build(self, batch, generator, device="cpu"):
            return Heard(grow.build(batch, generator, device))

    r = render(_model(), "conv2:3", param=Spy(), steps=4, progress=False, snapshots=[2])
    assert heard == [(0, 4), (1, 4), (2, 4), (2, 4), (3, 4), (4, 4)]  # steps 0-1, the snapshot after 2, 2-3, the final
    assert r.history[-1, 0] > r.history[0, 0]


def test_defaults_and_settings_record():
    m = _model()
    low = {"decay": FOURIER_DECAY, "cutoff": FOURIER_CUTOFF, "grow": FOURIER_GROW, "headroom": FOURIER_HEADROOM}
    assert default_param(m) == P.fourier(size=24, **low)  # the model's input size
    assert default_param(Model(m.module, InputSpec(size=None))) == P.fourier(size=128, **low)
    assert default_param(Model(m.module, InputSpec(size=(24, 32)))) == P.fourier(size=(24, 32), **low)
    x = torch.rand(2, 3, 128, 128)
    assert default_transforms(m)(x, torch.Generator().manual_seed(0)).shape == (2, 3, 24, 24)
    r = render(m, "conv2:0", steps=1, progress=False)
    assert r.images.shape == (1, 3, 24, 24)
    assert r.settings["transforms"] == "default"
    r = render(m, "conv2:0", transforms=T.compose(T.jitter(2), T.resize(24)), **FAST)
    assert r.settings["transforms"] == "custom"


def test_views_show_every_image_several_times_per_step_and_average_the_scores():
    """``views=3``: one forward per step over 3 stacked copies of the batch (view-major), each transformed
    on its own; image i is scored on objective i in every view, and the scores are averaged."""
    m = _model()
    _ = m.layers
    m.module.calls = 0
    seen = []

    def record(x, g):
        seen.append(x.detach().clone())
        return T.compose(T.jitter(2), T.resize(24))(x, g)

    objs = ["conv2:0", "conv1:2"]
    r = render(m, objs, transforms=record, views=3, **FAST)
    assert r.history.shape == (6, 2) and m.module.calls == 6
    assert seen[0].shape == (6, 3, 20, 20)
    for i in range(2):  # rows i, i+2, i+4 are the same image
        assert torch.equal(seen[0][i], seen[0][i + 2]) and torch.equal(seen[0][i], seen[0][i + 4])
    assert not torch.equal(seen[0][0], seen[0][1])
    assert r.settings["views"] == 3 and (r.history[-1] > r.history[0]).all()


def test_views_average_rather_than_add():
    """With a deterministic transform every view is identical: 2 views must score and optimize exactly like 1
    (a sum would double the scores)."""
    resize = T.resize(24)
    one = render(_model(), ["conv2:0", "conv1:2"], transforms=resize, **FAST)
    two = render(_model(), ["conv2:0", "conv1:2"], transforms=resize, views=2, **FAST)
    torch.testing.assert_close(two.history, one.history)
    torch.testing.assert_close(two.images, one.images)


def test_views_keep_batch_level_objectives_on_their_batch():
    """Diversity compares the images of one view with each other, not an image with its own copies: with
    identical views it scores exactly as with one view (over all 6 copies it would see perfect twins)."""
    obj = O.channel("conv2", 0) + 10 * O.diversity("conv2")
    resize = T.resize(24)
    one = render(_model(), obj, batch=3, transforms=resize, **FAST)
    two = render(_model(), obj, batch=3, transforms=resize, views=2, **FAST)
    torch.testing.assert_close(two.history, one.history)


def test_cosine_lr_schedule_decays_the_steps():
    """The last of 6 cosine steps moves the image far less than a constant-lr step (the last step at 1.4% of lr)."""
    moves = {}
    for schedule in ("constant", "cosine"):
        r = render(_model(), "conv2:0", lr_schedule=schedule, snapshots=[5], **FAST)
        moves[schedule] = (r.images - r.snapshots[5]).abs().max()
        assert r.settings["lr_schedule"] == schedule
    assert moves["cosine"] < 0.2 * moves["constant"]


def test_bad_views_and_schedule_are_clear_errors():
    with pytest.raises(VisfeatError, match="views must be at least 1"):
        render(_model(), "conv2:0", views=0, **FAST)
    with pytest.raises(VisfeatError, match="lr_schedule must be 'constant' or 'cosine', got 'linear'"):
        render(_model(), "conv2:0", lr_schedule="linear", **FAST)
    for bad in (-0.1, 1.0, 2):
        with pytest.raises(VisfeatError, match=f"settle must be a share of the steps in \\[0, 1\\).*got {bad}"):
            render(_model(), "conv2:0", settle=bad, **FAST)


@pytest.mark.parametrize(("settle", "transformed"), [(0.0, 8), (0.25, 6), (0.5, 4), (0.9, 1)])
def test_settle_finishes_on_the_untransformed_picture(settle, transformed):
    """The last ``settle`` share of the steps skips the random transforms: the model then sees the image itself."""
    calls = []

    def recorded(x, g):
        calls.append(x.shape[-1])
        return T.compose(T.jitter(2), T.resize(24))(x, g)

    r = render(_model(), "conv2:0", param=P.fourier(20), steps=8, settle=settle, transforms=recorded, progress=False)
    assert len(calls) == transformed and r.settings["settle"] == settle


def test_default_image_keeps_pixels_off_black_and_white():
    """Coarse units pushed for 200 steps drive a Fourier image without headroom to 0 or 255 on a share of its
    pixels; the default image's headroom penalty keeps every pixel off both. Fine units keep the full range."""
    m = _strided()
    run = dict(steps=200, lr=0.3, progress=False, seed=0)
    assert default_param(m, [O.channel("0", 1)]).headroom == 0.0  # a shallow unit may want saturated colour
    for unit in (O.channel("2", 1), O.class_logit(3)):
        param = default_param(m, [unit])
        assert param.headroom == FOURIER_HEADROOM > 0
        bounded = render(m, unit, **run).images.mul(255).round()
        free = render(m, unit, param=replace(param, headroom=0.0), **run).images.mul(255).round()
        assert ((free == 0) | (free == 255)).float().mean() > 0.05
        assert ((bounded == 0) | (bounded == 255)).sum() == 0
