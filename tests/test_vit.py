"""ViT addressing: token selectors, heads, attention patterns, catalogue layouts, ViT render defaults.

Fast: a tiny ViT written here (as a user would), and timm ViT/DeiT/Swin with random weights.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from visfeat import objectives as O
from visfeat import param as P
from visfeat import vit
from visfeat.errors import UnitError, VisfeatError
from visfeat.models import InputSpec, Model, load_model
from visfeat.render import default_param, default_transforms, render
from visfeat.units import parse_unit


class TinyAttention(nn.Module):
    """Multi-head self-attention laid out like timm's (qkv, q_norm, k_norm, norm, proj)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm, self.k_norm, self.norm = nn.Identity(), nn.Identity(), nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        a = ((q * self.head_dim**-0.5) @ k.transpose(-2, -1)).softmax(-1)
        return self.proj(self.norm((a @ v).transpose(1, 2).reshape(b, t, d)))


class TinyBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = TinyAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """32x32 input, 8x8 patches (4x4 grid), a class token and two register tokens."""

    def __init__(self, dim: int = 32, heads: int = 4, depth: int = 2, registers: int = 2) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.patch = nn.Conv2d(3, dim, 8, 8)
        self.cls = nn.Parameter(torch.randn(1, 1, dim, generator=g))
        self.reg = nn.Parameter(torch.randn(1, registers, dim, generator=g))
        self.pos = nn.Parameter(torch.randn(1, 16, dim, generator=g) * 0.5)
        self.blocks = nn.Sequential(*[TinyBlock(dim, heads) for _ in range(depth)])
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        b = x.shape[0]
        x = torch.cat([self.cls.expand(b, -1, -1), self.reg.expand(b, -1, -1), p], 1)
        return self.head(self.blocks(x)[:, 0])


@pytest.fixture(scope="module")
def tiny() -> Model:
    torch.manual_seed(0)
    return Model(TinyViT(), InputSpec(size=(32, 32), fixed_size=True), name="tiny-vit")


@pytest.fixture(scope="module")
def vit_tiny() -> Model:
    return load_model("timm:vit_tiny_patch16_224", pretrained=False)


def _acts(model: Model, layers: list[str], n: int = 2, seed: int = 0) -> dict:
    x = torch.rand(n, 3, *model.spec.size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.activations(x, layers, stop_early=False)


# --- selectors and layouts -----------------------------------------------------------------------


@pytest.mark.parametrize("text", ["cls", "mean", "patch=3,5", "patch=0:4,2:6", "reg=1"])
def test_selector_round_trip(text):
    assert str(vit.parse_selector(text)) == text


def test_selector_indices_follow_timm_order():
    lay = vit.TokenLayout((4, 4), cls=1, registers=2)
    assert vit.parse_selector("cls").indices(lay) == [0]
    assert vit.parse_selector("reg=1").indices(lay) == [2]
    assert vit.parse_selector("patch=1,2").indices(lay) == [3 + 4 + 2]
    assert vit.parse_selector("patch=0:2,0:2").indices(lay) == [3, 4, 7, 8]
    assert vit.parse_selector("mean").indices(lay) == list(range(3, 19))


@pytest.mark.parametrize(
    ("tokens", "grid", "prefix"),
    [
        (197, (14, 14), 1),
        (257, (16, 16), 1),
        (261, (16, 16), 5),
        (196, (14, 14), 0),
        (19, (4, 4), 3),
        (198, (14, 14), 2),
    ],  # noqa: E501
)
def test_infer_layout(tokens, grid, prefix):
    lay = vit.infer_layout(tokens)
    assert lay.grid == grid and lay.prefix == prefix


def test_infer_layout_with_known_rectangular_grid():
    lay = vit.infer_layout(1 + 6 * 10, grid=(6, 10))
    assert lay.grid == (6, 10) and lay.cls == 1 and lay.registers == 0


def test_bad_selectors_say_what_is_valid():
    lay = vit.TokenLayout((4, 4), cls=1, registers=2)
    with pytest.raises(UnitError, match=r"outside the 4x4 patch grid.*rows 0..3"):
        vit.parse_selector("patch=4,0").indices(lay)
    with pytest.raises(UnitError, match=r"@reg=2 is out of range.*registers 0..1"):
        vit.parse_selector("reg=2").indices(lay)
    with pytest.raises(UnitError, match="no class token"):
        vit.parse_selector("cls").indices(vit.TokenLayout((4, 4), cls=0))
    with pytest.raises(UnitError, match="cannot parse token selector"):
        vit.parse_selector("patch=3")


# --- unit strings ----------------------------------------------------------------------------------


def test_unit_strings_keep_the_cnn_grammar():
    assert parse_unit("blocks.4:12@3,5").objective().name == "neuron(blocks.4:12@3,5)"
    assert parse_unit("blocks.4:12").objective().name == "channel(blocks.4:12)"
    assert parse_unit("blocks.6.mlp.act:123@cls").objective().name == "token_channel(blocks.6.mlp.act:123@cls)"
    assert parse_unit("blocks.6.attn:h3.17@reg=0").objective().name == "head(blocks.6.attn:h3.17@reg=0)"
    assert parse_unit("blocks.6:5@patch=3,5").filename() == "blocks.6_5_at_patch=3_5"


def test_token_units_read_the_right_token(tiny):
    acts = _acts(tiny, ["blocks.1", "blocks.1.mlp.1"])
    x = acts["blocks.1.mlp.1"]
    torch.testing.assert_close(parse_unit("blocks.1.mlp.1:7@cls").objective()(acts), x[:, 0, 7])
    torch.testing.assert_close(parse_unit("blocks.1.mlp.1:7@reg=1").objective()(acts), x[:, 2, 7])
    torch.testing.assert_close(parse_unit("blocks.1.mlp.1:7@patch=2,1").objective()(acts), x[:, 3 + 2 * 4 + 1, 7])
    torch.testing.assert_close(parse_unit("blocks.1.mlp.1:7@mean").objective()(acts), x[:, 3:, 7].mean(1))
    r = x[:, [3 + 0, 3 + 1, 3 + 4, 3 + 5], 7].mean(1)
    torch.testing.assert_close(parse_unit("blocks.1.mlp.1:7@patch=0:2,0:2").objective()(acts), r)


def test_validate_errors_name_the_valid_range(tiny):
    parse_unit("blocks.1.attn:h3@cls").validate(tiny)
    parse_unit("blocks.1.mlp.1:63@patch=3,3").validate(tiny)
    with pytest.raises(UnitError, match=r"head 4 is out of range.*4 heads \(0..3\)"):
        parse_unit("blocks.1.attn:h4@cls").validate(tiny)
    with pytest.raises(UnitError, match=r"outside the 4x4 patch grid"):
        parse_unit("blocks.1.mlp.1:3@patch=0,4").validate(tiny)
    with pytest.raises(UnitError, match=r"@reg=5 is out of range"):
        parse_unit("blocks.1:3@reg=5").validate(tiny)
    with pytest.raises(UnitError, match=r"dim 64 is out of range.*\(0..63\)"):
        parse_unit("blocks.1.mlp.1:64@cls").validate(tiny)
    with pytest.raises(UnitError, match="not a timm-style attention module"):
        parse_unit("blocks.1.mlp:h0@cls").validate(tiny)


def test_runtime_head_out_of_range_is_a_clear_error(tiny):
    obj = vit.head("blocks.1.attn", 9)
    with pytest.raises(UnitError, match=r"head 9 is out of range.*4 heads"):
        obj(_acts(tiny, sorted(obj.layers)))


def test_catalogue_shows_token_layouts(tiny, vit_tiny):
    assert tiny.layer("blocks.0").tokens == "cls + 2 reg + 4x4 patches"
    assert tiny.layer("blocks.0.attn.q_norm").layout == "heads"
    assert "cls + 2 reg + 4x4 patches" in tiny.describe()
    assert vit_tiny.layer("blocks.6.mlp.act").tokens == "cls + 14x14 patches"


# --- heads and attention ---------------------------------------------------------------------------


def test_head_objective_slices_the_concatenated_heads(vit_tiny):
    obj = parse_unit("blocks.2.attn:h1.5@patch=3,4").objective()
    acts = _acts(vit_tiny, sorted(obj.layers))
    heads = acts["blocks.2.attn.norm"]  # [B, 197, 3 * 64]
    torch.testing.assert_close(obj(acts), heads[:, 1 + 3 * 14 + 4, 64 + 5])
    whole = parse_unit("blocks.2.attn:h2@cls").objective()(acts)
    torch.testing.assert_close(whole, heads[:, 0, 128:].pow(2).mean(-1))


def test_attention_map_equals_timm_unfused_attention(vit_tiny):
    attn = vit_tiny.module.blocks[3].attn
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        fused = vit_tiny.activations(x, ["blocks.3.attn.q_norm", "blocks.3.attn.k_norm"])
        attn.fused_attn = False
        try:
            ref = vit_tiny.activations(x, ["blocks.3.attn.attn_drop"])["blocks.3.attn.attn_drop"]
        finally:
            attn.fused_attn = True
    torch.testing.assert_close(vit.attention_map(fused, "blocks.3.attn"), ref, atol=1e-5, rtol=1e-4)
    obj = vit.attention("blocks.3.attn", head=2, query="cls", key="patch=0:2,0:3")
    keys = [1 + r * 14 + c for r in range(2) for c in range(3)]
    torch.testing.assert_close(obj(fused), ref[:, 2, 0, keys].sum(-1), atol=1e-5, rtol=1e-4)


# --- every objective rises on the tiny ViT ---------------------------------------------------------

RISING = {
    "cls": lambda: vit.channel("blocks.1.mlp.1", 3, "cls"),
    "mean": lambda: vit.channel("blocks.1", 5, "mean"),
    "patch": lambda: vit.neuron("blocks.1.mlp.1", 7, "patch=1,2"),
    "reg": lambda: vit.neuron("blocks.0", 2, "reg=1"),
    "direction": lambda: vit.direction("blocks.1", torch.linspace(-1, 1, 32), tokens="patch=0:2,0:2"),
    "head": lambda: vit.head("blocks.1.attn", 2),
    "head_dim_custom": lambda: vit.head("blocks.1.attn", 1, channel=3, heads_layer="blocks.1.attn.norm", num_heads=4),
    "attention": lambda: vit.attention("blocks.1.attn", head=0, query="cls", key="patch=0:2,0:2"),
    "unit": lambda: parse_unit("blocks.1.attn:h3.2@cls").objective(),
}


@pytest.mark.parametrize("name", sorted(RISING))
def test_objective_rises(tiny, name):
    res = render(tiny, RISING[name](), steps=24, lr=0.1, batch=2, param=P.fourier(32), progress=False)
    first, last = res.history[:4].mean(), res.history[-4:].mean()
    assert torch.isfinite(res.history).all()
    assert last > first + 1e-3, (name, res.history[:, 0].tolist())


def test_token_diversity_pushes_a_batch_apart(tiny):
    obj = vit.channel("blocks.1", 5, "mean") + 0.5 * vit.diversity("blocks.1")
    res = render(tiny, obj, steps=24, lr=0.1, batch=3, param=P.fourier(32), progress=False)
    div = vit.diversity("blocks.1")
    acts = tiny.activations(res.images, ["blocks.1"])
    assert div(acts).mean() > -0.999
    assert res.history[-4:].mean() > res.history[:4].mean()


def test_diversity_is_zero_for_identical_images_and_uses_patch_tokens(tiny):
    acts = _acts(tiny, ["blocks.1"], n=1)
    same = {"blocks.1": acts["blocks.1"].expand(3, -1, -1)}
    torch.testing.assert_close(vit.diversity("blocks.1")(same), torch.full((3,), -1.0))


# --- render defaults -------------------------------------------------------------------------------


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.pool(self.conv(x)).flatten(1)


def _uses_vit_transforms(model: Model) -> bool:
    """The ViT transforms are crops that never pad; the CNN set pads, so a constant image gets grey borders."""
    x = torch.ones(1, 3, *model.spec.size)
    out = default_transforms(model)(x, torch.Generator().manual_seed(0))
    return out.shape == x.shape and bool((out > 0.9).all())


def test_render_uses_vit_defaults_only_for_token_models(tiny):
    cnn = Model(TinyCNN(), InputSpec(size=(32, 32)))
    assert vit.is_token_model(tiny) and not vit.is_token_model(cnn)
    assert _uses_vit_transforms(tiny) and not _uses_vit_transforms(cnn)
    assert default_param(tiny).size == 32  # never larger than the model's input
    res = render(tiny, "blocks.1.mlp.1:3@cls", steps=8, progress=False)
    assert res.images.shape == (1, 3, 32, 32) and torch.isfinite(res.history).all()


def test_a_model_whose_forward_fails_is_an_error_not_a_cnn():
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("broken forward")

    with pytest.raises(RuntimeError, match="broken forward"):  # not silently given the CNN defaults
        vit.is_token_model(Model(Broken(), InputSpec(size=(8, 8))))


def test_a_token_model_flag_overrides_detection():
    cnn = Model(TinyCNN(), InputSpec(size=(32, 32)))
    cnn.token_model = True
    assert _uses_vit_transforms(cnn)


# --- timm families ---------------------------------------------------------------------------------


def test_deit_distillation_token_is_the_first_register():
    deit = load_model("timm:deit_tiny_distilled_patch16_224", pretrained=False)
    assert deit.layer("blocks.5").tokens == "cls + 1 reg + 14x14 patches"
    acts = _acts(deit, ["blocks.5.mlp.act"])
    got = parse_unit("blocks.5.mlp.act:9@reg=0").objective()(acts)
    torch.testing.assert_close(got, acts["blocks.5.mlp.act"][:, 1, 9])
    parse_unit("blocks.5.attn:h2@reg=0").validate(deit)


def test_swin_channels_last_maps_and_token_mlps():
    swin = load_model("timm:swin_tiny_patch4_window7_224", pretrained=False)
    blk, mlp = "layers.2.blocks.1", "layers.2.blocks.1.mlp.act"
    assert swin.layer(blk).layout == "HWC" and swin.layer(blk).channels == 384
    assert swin.layer(mlp).tokens == "14x14 patches"
    acts = _acts(swin, [blk, mlp])
    torch.testing.assert_close(parse_unit(f"{blk}:12@patch=3,4").objective()(acts), acts[blk][:, 3, 4, 12])
    torch.testing.assert_close(parse_unit(f"{mlp}:12@patch=3,4").objective()(acts), acts[mlp][:, 3 * 14 + 4, 12])
    parse_unit(f"{blk}:383@patch=13,13").validate(swin)
    with pytest.raises(UnitError, match="no class token"):
        parse_unit(f"{mlp}:1@cls").validate(swin)


# --- input sizes -----------------------------------------------------------------------------------


def test_input_size_the_position_embedding_cannot_take(tiny):
    with pytest.raises(VisfeatError, match="takes 32x32 images, got 40x40"):
        tiny(torch.rand(1, 3, 40, 40))
    with pytest.raises(VisfeatError, match=r"img_size=230 is not a multiple of the patch size 14.*224 or 238"):
        load_model("dinov2_vits14_imgfocus", img_size=230)


def test_layer_objectives_keep_working_on_token_layers(tiny):
    acts = _acts(tiny, ["blocks.1"])
    torch.testing.assert_close(O.channel("blocks.1", 3)(acts), acts["blocks.1"][:, :, 3].mean(1))


def test_pre_layer_term_keeps_the_value_and_escapes_the_gelu_trap():
    pre = torch.full((1, 17, 4), -3.0, requires_grad=True)  # cls + 4x4 patches, all far below -0.75

    def acts():
        return {"mlp.fc1": pre, "mlp.act": torch.nn.functional.gelu(pre)}

    plain = vit.channel("mlp.act", 2, "mean")
    escape = vit.channel("mlp.act", 2, "mean", pre_layer="mlp.fc1")
    torch.testing.assert_close(plain(acts()), escape(acts()))
    (g_plain,) = torch.autograd.grad(plain(acts()).sum(), pre)
    (g_escape,) = torch.autograd.grad(escape(acts()).sum(), pre)
    assert g_plain[0, 1:, 2].max() < 0 < g_escape[0, 1:, 2].min()
