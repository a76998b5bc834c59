"""Objectives: every constructor rises under ``render`` (gradient ascent works end to end), arithmetic gives the
right numbers on hand-made activations, ``batch=`` and ``per_image`` address images, and unit strings parse."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from visfeat import objectives as O
from visfeat import param as P
from visfeat.errors import UnitError, UnknownLayerError
from visfeat.models import InputSpec, Model
from visfeat.render import render
from visfeat.units import Unit, as_objective, parse_index_list, parse_unit, parse_units


class Tiny(nn.Module):
    """Two convs and a 1000-way classifier (so ImageNet class names address its logits)."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.act2 = nn.ReLU()
        self.fc = nn.Linear(16, 1000)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


@pytest.fixture(scope="module")
def tiny() -> Model:
    return Model(Tiny(), InputSpec(size=(16, 16)), name="tiny")


def _identity(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return x


_DIR = torch.linspace(-1, 1, 16)

OBJECTIVES = {
    "channel": (O.channel("conv2", 3), 1),
    "neuron": (O.neuron("conv2", 5), 1),
    "neuron@y,x": (O.neuron("conv2", 5, 1, 6), 1),
    "layer": (O.layer("conv2"), 1),
    "direction": (O.direction("conv2", _DIR), 1),
    "direction cossim": (O.direction("conv2", _DIR, cossim_pow=2.0), 1),
    "class_logit index": (O.class_logit(3), 1),
    "class_logit name": (O.class_logit("espresso"), 1),
    "diversity": (O.diversity("conv1"), 3),
    "l1": (O.l1(), 1),
    "l2": (O.l2(constant=0.2), 1),
    "total_variation": (O.total_variation(), 1),
    "sum of two": (O.channel("conv2", 1) + 0.5 * O.channel("conv1", 2), 1),
    "channel on batch": (O.channel("conv2", 7, batch=1), 2),
}


@pytest.mark.parametrize("key", list(OBJECTIVES))
def test_objective_rises_under_render(tiny, key):
    """Lucid's check (``assert_gradient_ascent``): a few optimizer steps raise the objective."""
    obj, batch = OBJECTIVES[key]
    result = render(
        tiny, obj, param=P.pixel(16, sd=0.5), transforms=_identity, steps=8, lr=0.1, batch=batch, progress=False
    )
    h = result.history
    assert h.shape == (8, batch)
    assert torch.isfinite(h).all()
    first, last = h[0].sum().item(), h[-1].sum().item()
    assert last > first + 1e-3 * max(1.0, abs(first)), f"{obj.name}: {first:.5g} -> {last:.5g}"


def test_objective_names_and_layers():
    assert O.channel("conv2", 3).name == "channel(conv2:3)"
    assert O.neuron("conv2", 5, 1, 6).name == "neuron(conv2:5@1,6)"
    assert O.class_logit("espresso").name == "class_logit(espresso)"
    assert O.channel("a", 1, batch=2).name == "channel(a:1)[batch=2]"
    assert O.direction("a", [1.0, 0.0], cossim_pow=2).name == "direction(a, cossim_pow=2)"
    assert O.l1().layers == frozenset({O.INPUT})
    assert (O.channel("a", 0) - O.l2("b")).layers == frozenset({"a", "b"})
    assert O.class_logit(3).layers == frozenset({"logits"})


# ---- values on hand-made activations -------------------------------------------------------------


@pytest.fixture
def acts() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "a": torch.randn(2, 4, 3, 5, generator=g),
        "tok": torch.randn(2, 6, 4, generator=g),
        "logits": torch.randn(2, 1000, generator=g),
        "input": torch.rand(2, 3, 6, 6, generator=g),
    }


def test_constructor_values(acts):
    a, x = acts["a"], acts["input"]
    torch.testing.assert_close(O.channel("a", 2)(acts), a[:, 2].mean((1, 2)))
    torch.testing.assert_close(O.channel("tok", 3)(acts), acts["tok"][:, :, 3].mean(1))
    torch.testing.assert_close(O.neuron("a", 1)(acts), a[:, 1, 1, 2])  # centre of a 3x5 grid
    torch.testing.assert_close(O.neuron("a", 1, 0, 4)(acts), a[:, 1, 0, 4])
    torch.testing.assert_close(O.layer("a")(acts), (a**2).mean((1, 2, 3)))
    torch.testing.assert_close(O.class_logit(967)(acts), acts["logits"][:, 967])
    torch.testing.assert_close(O.class_logit("espresso")(acts), acts["logits"][:, 967])
    v = torch.tensor([1.0, -2.0, 0.5, 0.0])
    dots = torch.einsum("bchw,c->bhw", a, v)
    torch.testing.assert_close(O.direction("a", v)(acts), dots.mean((1, 2)))
    cos = dots / (a.norm(dim=1) * v.norm())
    torch.testing.assert_close(
        O.direction("a", v, cossim_pow=2)(acts), (dots * cos.clamp(min=0.1) ** 2).mean((1, 2)), atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(O.l1(constant=0.5)(acts), (x - 0.5).abs().mean((1, 2, 3)))
    torch.testing.assert_close(O.l2()(acts), (x**2).mean((1, 2, 3)).sqrt())
    tv = (x[..., 1:, :] - x[..., :-1, :]).abs().mean((1, 2, 3)) + (x[..., 1:] - x[..., :-1]).abs().mean((1, 2, 3))
    torch.testing.assert_close(O.total_variation()(acts), tv)


def test_diversity_values():
    same = torch.ones(3, 2, 4, 4)
    assert torch.allclose(O.diversity("a")({"a": same}), torch.full((3,), -1.0))  # identical images: -1
    ortho = torch.zeros(2, 2, 1, 1)
    ortho[0, 0], ortho[1, 1] = 1, 1
    assert torch.allclose(O.diversity("a")({"a": ortho}), torch.zeros(2))  # orthogonal Gram matrices: 0
    assert O.diversity("a")({"a": torch.ones(1, 2, 4, 4)}).tolist() == [0.0]  # a single image has no others


def test_arithmetic(acts):
    a = acts["a"]
    c0, c1 = a[:, 0].mean((1, 2)), a[:, 1].mean((1, 2))
    o0, o1 = O.channel("a", 0), O.channel("a", 1)
    torch.testing.assert_close((o0 + o1)(acts), c0 + c1)
    torch.testing.assert_close((o0 - o1)(acts), c0 - c1)
    torch.testing.assert_close((3 * o0)(acts), 3 * c0)
    torch.testing.assert_close((o0 * 3)(acts), 3 * c0)
    torch.testing.assert_close((o0 * o1)(acts), c0 * c1)
    torch.testing.assert_close((o0 / 4)(acts), c0 / 4)
    torch.testing.assert_close((o0 / o1)(acts), c0 / c1)
    torch.testing.assert_close((2 / o1)(acts), 2 / c1)
    torch.testing.assert_close((-o0)(acts), -c0)
    torch.testing.assert_close((1 - o0)(acts), 1 - c0)
    torch.testing.assert_close((o0 + 2)(acts), c0 + 2)
    total = sum([o0, o1, O.channel("a", 2)])
    torch.testing.assert_close(total(acts), c0 + c1 + a[:, 2].mean((1, 2)))
    assert (o0 - 2 * o1).name == "(channel(a:0) - (2 * channel(a:1)))"
    with pytest.raises(TypeError):
        o0 + "a:1"  # noqa: B018


def test_batch_addressing(acts):
    a = acts["a"]
    out = O.channel("a", 2, batch=1)(acts)
    torch.testing.assert_close(out, torch.stack([torch.tensor(0.0), a[1, 2].mean()]))
    out = (O.channel("a", 0, batch=0) + O.channel("a", 3, batch=1))(acts)
    torch.testing.assert_close(out, torch.stack([a[0, 0].mean(), a[1, 3].mean()]))
    with pytest.raises(UnitError, match=r"batch=5 but the batch has 2 images \(0\.\.1\)"):
        O.channel("a", 0, batch=5)(acts)


def test_per_image(acts):
    a = acts["a"]
    obj = O.per_image([O.channel("a", 0), O.neuron("a", 3, 2, 4)])
    torch.testing.assert_close(obj(acts), torch.stack([a[0, 0].mean(), a[1, 3, 2, 4]]))
    assert obj.layers == frozenset({"a"})
    with pytest.raises(UnitError, match="needs a batch of 3 images"):
        O.per_image([O.channel("a", 0)] * 3)(acts)
    with pytest.raises(UnitError, match="at least one"):
        O.per_image([])


def test_out_of_range_errors(acts):
    with pytest.raises(UnitError, match=r"channel 4 .* 4 channels \(0\.\.3\)"):
        O.channel("a", 4)(acts)
    with pytest.raises(UnitError, match=r"outside layer 'a''s 3x5 grid"):
        O.neuron("a", 0, 3, 0)(acts)
    with pytest.raises(UnitError, match="spatial"):
        O.neuron("tok", 0)(acts)
    with pytest.raises(UnitError, match="direction has 3 dims but layer 'a' has 4 channels"):
        O.direction("a", [1.0, 2.0, 3.0])(acts)
    with pytest.raises(UnitError, match=r"class 1000 is out of range.*0\.\.999"):
        O.class_logit(1000)(acts)
    with pytest.raises(UnitError, match="unknown ImageNet class 'espreso'; closest: espresso"):
        O.class_logit("espreso")


# ---- unit strings --------------------------------------------------------------------------------


def test_parse_channel_and_neuron(acts):
    u = parse_unit("a:2")
    assert u == Unit("a", 2) and str(u) == "a:2" and u.filename() == "a_2"
    torch.testing.assert_close(u.objective()(acts), acts["a"][:, 2].mean((1, 2)))
    u = parse_unit(" a:1@2,4 ")
    assert u == Unit("a", 1, "2,4") and u.filename() == "a_1_at_2_4"
    torch.testing.assert_close(u.objective()(acts), acts["a"][:, 1, 2, 4])
    torch.testing.assert_close(parse_unit("a:1@center").objective()(acts), acts["a"][:, 1, 1, 2])
    assert parse_unit("blocks.4.0.conv_pwl:12").layer == "blocks.4.0.conv_pwl"


def test_parse_logits(acts):
    for text in ("logit:967", "logit:espresso", "logits:967", "logit:Espresso"):
        obj = parse_unit(text).objective()
        torch.testing.assert_close(obj(acts), acts["logits"][:, 967], msg=text)
    torch.testing.assert_close(parse_unit("logit:sports_car").objective()(acts), acts["logits"][:, 817])


@pytest.mark.parametrize(
    "text, match",
    [
        ("blocks.4", "cannot parse unit 'blocks.4'; expected layer:channel"),
        ("", "cannot parse unit"),
        ("a b:1", "cannot parse unit"),
        ("blocks.4:x7", "the channel must be a whole number"),
        ("blocks.4:7@1", "unknown position '1'; use @y,x"),
        ("logit:967@3,5", "a class logit takes no '@' position"),
        ("logit:espreso", "closest: espresso"),
    ],
)
def test_bad_unit_strings(text, match):
    with pytest.raises(UnitError, match=match):
        parse_unit(text).objective()


def test_as_objective():
    assert as_objective("a:1").name == "channel(a:1)"
    obj = O.channel("a", 1)
    assert as_objective(obj) is obj
    with pytest.raises(TypeError, match="unit string"):
        as_objective(3)


def test_parse_units_ranges_lists_and_all(tiny):
    assert parse_units("conv2:3") == [Unit("conv2", 3)]
    assert parse_units("conv2:0-3") == [Unit("conv2", i) for i in range(4)]  # inclusive
    assert parse_units("conv2:1,3,7-9") == [Unit("conv2", i) for i in (1, 3, 7, 8, 9)]
    assert parse_units("conv2:1,3@3,5") == [Unit("conv2", 1, "3,5"), Unit("conv2", 3, "3,5")]  # @3,5: a position
    assert parse_units("logit:sports_car") == [Unit("logit", "sports_car")]
    assert parse_units("blocks.6.attn:h3@cls") == [Unit("blocks.6.attn", "h3", "cls")]
    assert parse_units("conv2:all", tiny) == [Unit("conv2", i) for i in range(16)]
    assert parse_units("conv1:all@center", tiny)[-1] == Unit("conv1", 7, "center")
    assert parse_units("conv2:14-15", tiny) == [Unit("conv2", 14), Unit("conv2", 15)]


@pytest.mark.parametrize(
    "text, match",
    [
        ("conv2:all", "'all' means every channel of 'conv2', which needs the model"),
        ("conv2:5-3", "range '5-3' in '5-3' runs backwards; write it low-high: '3-5'"),
        ("conv2:1-x", "cannot parse units '1-x'; expected e.g. '0-15'"),
        ("conv2:1,,2", "cannot parse units"),
        ("conv2", "cannot parse unit 'conv2'"),
    ],
)
def test_parse_units_errors(text, match):
    with pytest.raises(UnitError, match=match):
        parse_units(text)


def test_parse_units_checks_ranges_against_the_model(tiny):
    with pytest.raises(
        UnitError, match=r"conv2:14-17: out of range: 16, 17; there are 16 channels in layer 'conv2' \(0..15\)"
    ):
        parse_units("conv2:14-17", tiny)
    with pytest.raises(UnitError, match=r"channel 16 is out of range for layer 'conv2'"):
        parse_units("conv2:16", tiny)
    with pytest.raises(UnknownLayerError, match="unknown layer 'conv3'"):
        parse_units("conv3:all", tiny)
    assert parse_index_list(" 0-2, 7 ", 8) == [0, 1, 2, 7] and parse_index_list("all", 3) == [0, 1, 2]
