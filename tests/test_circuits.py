"""Circuits on tiny networks built here: planted car circuit, exactness against autograd, linearization,
pooled targets, cancellation, SAE endpoints, NMF and the HTML/SVG output."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import visfeat
from visfeat.circuits import (
    Latents,
    NonlinearPathError,
    build_circuit,
    contributors,
    direct_weights,
    expand,
    weight_nmf,
    write_circuit,
)
from visfeat.circuits.nmf import nmf

WINDOWS, WHEELS, OTHER = (0, 1), (2, 3), 4
TOP = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -1.0, -1.0]])  # excite top, inhibit bottom


class CarBlock(nn.Module):
    """car = conv3x3(BN(1x1 bottleneck(x))), concatenated with another branch, plus a 1x1 residual path."""

    def __init__(self):
        super().__init__()
        self.reduce = nn.Conv2d(6, 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(2)
        self.car = nn.Conv2d(2, 1, 3, padding=1)
        self.other = nn.Conv2d(6, 3, 3, padding=1)
        self.shortcut = nn.Conv2d(6, 4, 1, bias=False)

    def forward(self, x):
        return torch.cat([self.car(self.bn(self.reduce(x))), self.other(x)], 1) + self.shortcut(x)


class CarNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.act = nn.ReLU()
        self.block = CarBlock()

    def forward(self, x):
        return self.block(self.act(self.stem(x)))


def planted_car() -> tuple[visfeat.Model, torch.Tensor]:
    """The network and the car unit's kernel [6, 3, 3] on the channels of ``act``, computed by hand."""
    torch.manual_seed(0)
    net = CarNet()
    b = net.block
    with torch.no_grad():
        b.reduce.weight.zero_()
        b.reduce.weight[0, :, 0, 0] = torch.tensor([1.0, 0.5, 0, 0, 0, 0])  # windows -> r0
        b.reduce.weight[1, :, 0, 0] = torch.tensor([0, 0, 1.0, 0.7, 0, 0])  # wheels -> r1
        b.bn.running_mean.copy_(torch.tensor([0.3, -0.2]))
        b.bn.running_var.copy_(torch.tensor([3.0, 0.5]))
        b.bn.weight.copy_(torch.tensor([2.0, 1.5]))
        b.bn.bias.copy_(torch.tensor([0.1, -0.4]))
        b.car.weight[0, 0] = TOP  # windows excite the top of the car, inhibit the bottom
        b.car.weight[0, 1] = -TOP  # wheels excite the bottom, inhibit the top
        b.shortcut.weight[0].zero_()
        b.shortcut.weight[0, OTHER, 0, 0] = 0.3
    s = [2.0 / math.sqrt(3.0 + b.bn.eps), 1.5 / math.sqrt(0.5 + b.bn.eps)]
    expected = torch.zeros(6, 3, 3, dtype=torch.float64)
    for i, r, c in [(0, 0, 1.0), (1, 0, 0.5), (2, 1, 1.0), (3, 1, 0.7)]:
        expected[i] = c * s[r] * (TOP if r == 0 else -TOP).double()
    expected[OTHER, 1, 1] = 0.3
    return visfeat.load_model(net, visfeat.InputSpec(size=(16, 16))), expected.float()


def test_planted_car_kernels_recovered_exactly():
    model, expected = planted_car()
    e = expand(model, "act", "block", channels=[0], mode="exact")
    assert e.mode == "exact" and e.linearized == []
    assert e.weights.shape == (1, 6, 3, 3)
    torch.testing.assert_close(e.weights[0], expected, atol=1e-5, rtol=0)


def test_planted_car_contributors_name_windows_and_wheels():
    model, _ = planted_car()
    c = contributors(model, "block:0", "act", k=4)
    assert set(c.channels()[:4]) == set(WINDOWS + WHEELS)
    assert {x.index for x in c.excite} == set(WINDOWS + WHEELS)
    assert {x.index for x in c.inhibit} == set(WINDOWS + WHEELS)
    for x in c.excite + c.inhibit:
        top, bottom = x.kernel[0].sum(), x.kernel[2].sum()
        if x.index in WINDOWS:
            assert top > 0 > bottom  # windows: excite top, inhibit bottom
        else:
            assert bottom > 0 > top  # wheels: excite bottom, inhibit top
    assert c.excite[0].index == 2  # the strongest wheel (BN scale 1.5/sqrt(0.5)) leads
    assert not c.warnings  # one path per edge: nothing cancels
    # channel 4 reaches the car only through the residual path: ranked fifth, centre tap only
    more = contributors(model, "block:0", "act", k=5)
    assert more.excite[4].index == OTHER
    assert more.excite[4].kernel[1, 1] == pytest.approx(0.3, abs=1e-6)


# ------------------------------------------------------------------------------------------------
# exactness against autograd on random networks


class Pre(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


class LinearPost(nn.Module):
    """Strided, depthwise, bottleneck and dilated convs, BN, avg-pool, padding, concat and a residual add."""

    def __init__(self, c: int, act: type[nn.Module] = nn.Identity, pool: nn.Module | None = None):
        super().__init__()
        self.down = nn.Conv2d(c, c, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(c)
        self.act1 = act()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.bottleneck = nn.Conv2d(c, 2, 1)
        self.wide = nn.Conv2d(2, 3, 5, padding=4, dilation=2)
        self.avg = pool if pool is not None else nn.AvgPool2d(3, 1, 1)
        self.side = nn.Conv2d(c, 3, 1)
        self.bn2 = nn.BatchNorm2d(6)
        self.proj = nn.Conv2d(6, c, 1)
        self.act = act

    def forward(self, x):
        y = self.act1(self.bn1(self.down(x)))
        a = self.wide(F.pad(self.bottleneck(self.dw(y)), (0, 0, 0, 0)))
        if self.act is nn.ReLU:
            a = F.relu(a)
        b = self.side(self.avg(y))
        z = self.bn2(torch.cat([a, b], 1))
        return self.proj(z) + y


class Net(nn.Module):
    def __init__(self, c: int = 4, act: type[nn.Module] = nn.Identity, pool: nn.Module | None = None):
        super().__init__()
        self.pre = Pre(c)
        self.post = LinearPost(c, act, pool)

    def forward(self, x):
        return self.post(self.pre(x))


def _randomize(net: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))
    return net.eval()


def _reference_kernels(net: Net, size: int) -> torch.Tensor:
    """Autograd Jacobian of every centre output of ``post`` on the ``pre`` grid, cropped to its support."""
    x = net.pre(torch.rand(1, 3, size, size)).detach().requires_grad_(True)
    out = net.post(x)
    h, w = out.shape[-2:]
    rows = [torch.autograd.grad(out[0, o, h // 2, w // 2], x, retain_graph=True)[0][0] for o in range(out.shape[1])]
    jac = torch.stack(rows)
    support = jac.abs().sum((0, 1)) > 0
    ys, xs = support.any(1).nonzero(), support.any(0).nonzero()
    return jac[:, :, ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_mode_equals_autograd_jacobian_of_linear_networks(seed):
    torch.manual_seed(seed)
    net = _randomize(Net(), seed)
    model = visfeat.load_model(net, visfeat.InputSpec(size=(24, 24)))
    e = expand(model, "pre", "post", mode="exact")
    assert e.mode == "exact"
    ref = _reference_kernels(net, e.size[0])
    assert e.weights.shape == ref.shape
    torch.testing.assert_close(e.weights, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("seed", [0, 1])
def test_linearized_mode_equals_jacobian_without_relus(seed):
    torch.manual_seed(seed)
    relu_net = _randomize(Net(act=nn.ReLU, pool=nn.MaxPool2d(3, 1, 1)), seed)
    twin = Net(act=nn.Identity, pool=nn.AvgPool2d(3, 1, 1, count_include_pad=False))
    twin.load_state_dict(relu_net.state_dict())
    twin.eval()
    model = visfeat.load_model(relu_net, visfeat.InputSpec(size=(24, 24)))
    with pytest.raises(NonlinearPathError, match="ReLU"):
        expand(model, "pre", "post", mode="exact")
    e = expand(model, "pre", "post", mode="linearized")
    assert e.mode == "linearized"
    assert any("MaxPool2d -> AvgPool2d" in s for s in e.linearized)
    assert any("relu -> identity" in s for s in e.linearized)  # the functional F.relu
    assert any("ReLU -> identity" in s for s in e.linearized)  # the module
    ref = _reference_kernels(twin, e.size[0])
    torch.testing.assert_close(e.weights, ref, atol=1e-5, rtol=1e-4)
    auto = expand(model, "pre", "post")
    assert auto.mode == "linearized"
    torch.testing.assert_close(auto.weights, e.weights)


class PooledNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 5, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(5, 7)

    def forward(self, x):
        return self.fc(self.pool(self.b(self.a(x))).flatten(1))


def test_pooled_target_kernels_sum_to_interior_gradient():
    torch.manual_seed(3)
    net = PooledNet().eval()
    model = visfeat.load_model(net, visfeat.InputSpec(size=(20, 20)))
    e = expand(model, "a", "logits", mode="exact")
    assert e.pooled_through == "b" and e.weights.shape == (7, 4, 3, 3)
    a = net.a(torch.rand(1, 3, 20, 20)).detach().requires_grad_(True)
    logits = net.fc(net.pool(net.b(a)).flatten(1))
    for o in range(7):
        (g,) = torch.autograd.grad(logits[0, o], a, retain_graph=True)
        # an interior position sees every kernel tap once, each averaged over the 20x20 positions
        torch.testing.assert_close(g[0, :, 10, 10], e.weights[o].sum((1, 2)) / 400, atol=1e-6, rtol=1e-4)


def test_direct_weights_fold_batchnorm():
    torch.manual_seed(4)
    net = _randomize(Net(), 4)
    model = visfeat.load_model(net, visfeat.InputSpec(size=(24, 24)))
    e = expand(model, "post.act1", "post.dw", mode="exact")  # a depthwise conv: diagonal in channels
    folded = direct_weights(net.post.dw)
    for o in range(4):
        torch.testing.assert_close(e.weights[o, o], folded[o, 0])
        assert e.weights[o].abs().sum() == pytest.approx(e.weights[o, o].abs().sum().item())
    e = expand(model, "pre", "post.bn1", mode="exact")  # stride-2 conv then BN
    torch.testing.assert_close(e.weights, direct_weights(net.post.down, net.post.bn1), atol=1e-6, rtol=1e-5)


class Cancel(nn.Module):
    def __init__(self):
        super().__init__()
        self.src = nn.Conv2d(3, 2, 1)
        self.p = nn.Conv2d(2, 2, 3, padding=1)
        self.q = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        s = self.src(x)
        return self.p(s) + self.q(s)


def test_cancellation_warning():
    torch.manual_seed(5)
    net = Cancel().eval()
    with torch.no_grad():
        net.q.weight[0, 0] = -0.95 * net.p.weight[0, 0]  # the two paths from channel 0 nearly cancel
    model = visfeat.load_model(net, visfeat.InputSpec(size=(12, 12)))
    e = expand(model, "src", "logits", channels=[0], per_path=True)
    assert len(e.paths) == 2 and e.path_weights.shape == (2, 1, 2, 3, 3)
    torch.testing.assert_close(e.path_weights.sum(0), e.weights)
    ratio = e.cancellation()[0]
    assert ratio[0] < 0.05 and ratio[1] > 0.25
    c = contributors(model, "logits:0", "src", k=2)
    assert any("src:0" in w and "cancel" in w for w in c.warnings)
    assert not any("src:1" in w for w in c.warnings)


def test_sae_latents_as_endpoints():
    model, expected = planted_car()
    g = torch.Generator().manual_seed(0)
    target = Latents("block", torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g), "t")
    full = expand(model, "act", "block").weights  # [4, 6, 3, 3]
    e = expand(model, "act", "block", directions=target.encoder)
    torch.testing.assert_close(e.weights, torch.einsum("jc,cikl->jikl", target.encoder, full), atol=1e-5, rtol=1e-4)
    source = Latents("act", torch.randn(5, 6, generator=g), torch.randn(5, 6, generator=g), "s")
    c = contributors(model, "block:0", "act", k=5, source_latents=source)
    torch.testing.assert_close(c.weights, torch.einsum("ikl,ji->jkl", expected, source.decoder), atol=1e-5, rtol=1e-4)
    assert len(c.excite) == 5
    c = contributors(model, "block/t:1", "act", k=2, latents=target)
    torch.testing.assert_close(c.weights, e.weights[1], atol=1e-5, rtol=1e-4)


def test_latents_from_visfeat_sae():
    import visfeat.sae as sae_mod

    sae = sae_mod.create("topk", d_in=4, d_sae=8, k=2)
    with torch.no_grad():
        sae.scale.fill_(2.5)
        sae.b_dec.normal_()
    lat = Latents.from_sae(sae, layer="block")
    x = torch.randn(3, 4)
    linear = sae.pre_acts(x) - sae.pre_acts(torch.zeros(1, 4))
    torch.testing.assert_close(linear, x @ lat.encoder.T, atol=1e-5, rtol=1e-4)
    z = torch.randn(3, 8)
    torch.testing.assert_close(sae.decode(z) - sae.decode(torch.zeros(1, 8)), z @ lat.decoder, atol=1e-5, rtol=1e-4)


def test_nmf_recovers_spatial_factors():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(9, 3, generator=g)
    b = torch.rand(3, 12, generator=g)
    fa, fb = nmf(a @ b, 3, iters=3000)
    assert (fa @ fb - a @ b).norm() / (a @ b).norm() < 0.02
    model, expected = planted_car()
    n = weight_nmf(expected)
    assert n.rgb().shape == (3, 3, 3) and n.rgb().min() >= 0 and n.rgb().max() <= 1
    assert n.relative_error < 0.05  # top/bottom/centre structure is rank 3
    assert {c for c, _, _ in n.top_channels(0, 2) + n.top_channels(1, 2) + n.top_channels(2, 2)} & set(WINDOWS + WHEELS)


def test_circuit_page_is_offline_and_complete(tmp_path):
    model, _ = planted_car()
    circuit = build_circuit(model, "block:0", ["act"], k=4)
    assert circuit.modes == ["exact"]
    assert {n.unit for n in circuit.level(1)} == {"act:0", "act:1", "act:2", "act:3"}
    from visfeat.circuits import render_nodes

    render_nodes(model, circuit, steps=2, progress=False)
    paths = write_circuit(circuit, tmp_path, "car")
    page = paths["html"].read_text()
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert page.count("<img") >= 4 and "#ff" in page  # pictures and red excitation cells
    svg = paths["svg"].read_text()
    assert svg.startswith("<svg") and "act:2" in svg
    for rel in set(__import__("re").findall(r'href="(img/[^"]+)"', svg)):
        assert (tmp_path / rel).is_file()
    assert paths["png"].stat().st_size > 0
