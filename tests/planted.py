"""Planted fooling circuits (a test and benchmark fixture, not a public API): small models, weights set by hand,
whose natural images drive a unit through one feature while an easy synthetic pattern drives it through
another that natural images barely touch (after Geirhos et al., "Don't trust your eyes", ICML 2024).

Every model has *natural* features (colour blobs, luminance edges: rectified filters) and one *pattern* feature:
the energy (sum of squares of a quadrature pair) of an oriented grating in one colour axis. Photos give it almost
nothing (its weight is scaled so that it carries at most a few percent of the fooled unit's value on the image
set); a visualization can grow it without bound. The fooled unit adds it with a large weight; the normal units of
the same model read natural features only. ``fooled_cnn(depth=1)`` plants it in the second conv layer
(``act2:FOOLED``), ``depth=2`` one layer deeper (``act3:FOOLED``, the pattern relayed through a channel of layer 2),
and the class logit ``FOOLED_CLASS`` reads the fooled unit. ``fooled_vit`` plants it in a token model's MLP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

import visfeat as vf
from visfeat.data import default_images

SIZE = 64
NATURAL = 6  # natural channels of the first layer
FOOLED = 3  # the fooled unit's index in its layer
FOOLED_CLASS = 2


@dataclass(frozen=True)
class Pattern:
    """A grating: colour axis (RGB weights), orientation in degrees, period in pixels."""

    colour: tuple[float, float, float]
    angle: float
    period: float


PATTERNS = {
    "magenta-green stripes": Pattern((1.0, -2.0, 1.0), 0.0, 4.0),
    "blue-yellow diagonal": Pattern((-1.0, -1.0, 2.0), 45.0, 6.0),
    "red-green horizontal": Pattern((1.0, -1.0, 0.0), 90.0, 5.0),
}


def _gaussian(k: int, sigma: float) -> torch.Tensor:
    r = torch.arange(k) - (k - 1) / 2
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma**2))
    return g / g.sum()


def _natural_filters(k: int = 7) -> torch.Tensor:
    """Six natural filters [6, 3, k, k]: red, green and blue blobs, dark blob, vertical and horizontal edges."""
    g = _gaussian(k, k / 4)
    r = torch.arange(k) - (k - 1) / 2
    edge = g * r[None, :] / r.abs().max()
    lum = torch.tensor([1.0, 1.0, 1.0]) / 3
    out = torch.zeros(6, 3, k, k)
    for c, colour in enumerate(([2.0, -1, -1], [-1, 2.0, -1], [-1, -1, 2.0])):
        out[c] = torch.tensor(colour)[:, None, None] * g * 4
    out[3] = -lum[:, None, None] * g * 6
    out[4] = lum[:, None, None] * edge * 24
    out[5] = lum[:, None, None] * edge.T * 24
    return out


def _quadrature(p: Pattern, k: int = 7) -> torch.Tensor:
    """The sine and cosine Gabor filters [2, 3, k, k] of a grating in its colour axis."""
    r = torch.arange(k) - (k - 1) / 2
    y, x = torch.meshgrid(r, r, indexing="ij")
    t = math.radians(p.angle)
    phase = 2 * math.pi * (x * math.cos(t) + y * math.sin(t)) / p.period
    env = _gaussian(k, k / 3) * k
    colour = torch.tensor(p.colour) / torch.tensor(p.colour).abs().sum()
    return torch.stack([colour[:, None, None] * env * torch.sin(phase), colour[:, None, None] * env * torch.cos(phase)])


class Features(nn.Module):
    """Rectified natural channels and one pattern-energy channel (the last): [B, NATURAL + 1, H, W]."""

    def __init__(self, pattern: Pattern, in_channels: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, NATURAL + 2, 7, stride=2, padding=3)
        with torch.no_grad():
            self.conv.weight.copy_(torch.cat([_natural_filters(), _quadrature(pattern)]))
            self.conv.bias.zero_()
        self.scale = nn.Parameter(torch.ones(1), requires_grad=False)  # set so photos give the energy little

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        energy = ((y[:, NATURAL:] ** 2).sum(1, keepdim=True) * self.scale) ** 2
        return torch.cat([torch.relu(y[:, :NATURAL]), energy], 1)


def _mix(rows: list[dict[int, float]], channels: int) -> torch.Tensor:
    """A 1x1 weight [units, channels, 1, 1] from per-unit {channel: weight}."""
    w = torch.zeros(len(rows), channels, 1, 1)
    for u, row in enumerate(rows):
        for c, v in row.items():
            w[u, c] = v
    return w


#: The second layer's units: four read natural channels only, unit FOOLED adds the pattern (channel 6).
UNITS = [{0: 1.0, 4: 1.0}, {1: 1.0, 5: 1.0}, {2: 1.0, 3: 0.5}, {0: 1.0}, {3: 1.0, 4: 0.5, 5: 0.5}]


class FooledCNN(nn.Module):
    """features (layer ``act1``), a 1x1 conv ``conv2`` + ReLU ``act2``, optionally ``conv3`` + ``act3``, pool,
    classes ``fc``."""

    def __init__(self, pattern: Pattern, depth: int, weight: float) -> None:
        super().__init__()
        self.act1 = Features(pattern)
        fooled = dict(UNITS[FOOLED])
        if depth == 1:
            fooled[NATURAL] = weight
        rows = [*UNITS[:FOOLED], fooled, *UNITS[FOOLED + 1 :]]
        if depth == 2:
            rows.append({NATURAL: 1.0})  # relays the pattern to layer 3 (photos give it nothing, so no unit of note)
        self.conv2 = nn.Conv2d(NATURAL + 1, len(rows), 3, stride=2, padding=1)
        with torch.no_grad():
            self.conv2.weight.zero_()
            self.conv2.weight[:, :, 1:2, 1:2] = _mix(rows, NATURAL + 1)
            self.conv2.bias.zero_()
        self.act2 = nn.ReLU()
        last = len(rows)
        if depth == 2:
            rows3 = [{0: 1.0, 1: 0.5}, {1: 1.0, 2: 0.5}, {2: 1.0, 4: 0.5}, {0: 1.0, len(rows) - 1: weight}, {3: 1.0}]
            self.conv3 = nn.Conv2d(len(rows), len(rows3), 1)
            with torch.no_grad():
                self.conv3.weight.copy_(_mix(rows3, len(rows)))
                self.conv3.bias.zero_()
            self.act3 = nn.ReLU()
            last = len(rows3)
        self.depth = depth
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(last, 4)
        with torch.no_grad():
            self.fc.weight.zero_()
            for cls, unit in enumerate((0, 1, FOOLED, 4)):
                self.fc.weight[cls, unit] = 1.0
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act2(self.conv2(self.act1(x)))
        if self.depth == 2:
            y = self.act3(self.conv3(y))
        return self.fc(self.pool(y).flatten(1))


def natural_images(n: int = 96, seed: int = 0) -> torch.Tensor:
    """Crops of the photos the packages ship, at the planted models' size."""
    data = default_images(n=n, size=SIZE, seed=seed)
    return torch.stack([data[i] for i in range(n)])


def _calibrate(model: nn.Module, images: torch.Tensor, share: float) -> None:
    """Scale the pattern energy so that on ``images`` it is at most ``share`` of the natural channels' mean."""
    with torch.no_grad():
        f = model.act1
        f.scale.fill_(1.0)
        out = f(images)
        natural = out[:, :NATURAL].mean((0, 2, 3)).mean()
        energy = out[:, NATURAL].mean()
        f.scale.fill_(float((share * natural / energy.clamp_min(1e-12)) ** 0.5))


def fooled_cnn(pattern: str = "magenta-green stripes", depth: int = 1, weight: float = 6.0, share: float = 0.05):
    """A planted CNN as a visfeat Model: natural images reach ``fooled_unit`` through natural channels, its
    visualization through the pattern. Returns the model and the names of its fooled and normal units."""
    torch.manual_seed(0)
    net = FooledCNN(PATTERNS[pattern], depth, weight)
    _calibrate(net, natural_images(), share)
    model = vf.Model(net, vf.InputSpec(size=(SIZE, SIZE)), name=f"fooled-cnn-{depth}", labels=tuple("abcd"))
    layer = "act2" if depth == 1 else "act3"
    normal = [f"{layer}:{u}" for u in range(5) if u != FOOLED]
    return model, {"fooled": [f"{layer}:{FOOLED}", f"logit:{FOOLED_CLASS}"], "normal": normal + ["logit:0"]}


class FooledBlock(nn.Module):
    """A token MLP block: ``tokens + W relu(tokens)`` whose dimension FOOLED also adds the pattern energy dim."""

    def __init__(self, dim: int, weight: float) -> None:
        super().__init__()
        self.mix = nn.Linear(dim, dim, bias=False)
        rows = [{0: 1.0, 4: 1.0}, {1: 1.0, 5: 1.0}, {2: 1.0, 3: 0.5}, {0: 1.0, NATURAL: weight}, {3: 1.0, 5: 0.5}]
        with torch.no_grad():
            self.mix.weight.zero_()
            self.mix.weight[: len(rows), :] = _mix(rows, dim)[:, :, 0, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.mix(x))


class FooledViT(nn.Module):
    """Patch tokens from the features (``embed``: [B, T, NATURAL + 1]), a mixing block ``blocks.0`` (the fooled
    token unit ``blocks.0:FOOLED``), mean-pooled classes."""

    def __init__(self, pattern: Pattern, weight: float) -> None:
        super().__init__()
        self.act1 = Features(pattern)
        self.embed = nn.AvgPool2d(4)  # 32 px feature maps -> an 8x8 grid of patch tokens
        self.blocks = nn.Sequential(FooledBlock(NATURAL + 1, weight))
        self.head = nn.Linear(NATURAL + 1, 4)
        with torch.no_grad():
            self.head.weight.zero_()
            for cls, unit in enumerate((0, 1, FOOLED, 4)):
                self.head.weight[cls, unit] = 1.0
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(self.act1(x)).flatten(2).transpose(1, 2)
        return self.head(self.blocks(tokens).mean(1))


def fooled_vit(pattern: str = "magenta-green stripes", weight: float = 6.0, share: float = 0.05):
    """A planted token model: its token unit ``blocks.0:FOOLED`` is fooled, the others are not."""
    torch.manual_seed(0)
    net = FooledViT(PATTERNS[pattern], weight)
    _calibrate(net, natural_images(), share)
    model = vf.Model(net, vf.InputSpec(size=(SIZE, SIZE)), name="fooled-vit", labels=tuple("abcd"))
    normal = [f"blocks.0:{u}" for u in range(5) if u != FOOLED]
    return model, {"fooled": [f"blocks.0:{FOOLED}"], "normal": normal}


def fooled_gallery_model() -> vf.Model:
    """The depth-1 planted CNN for a gallery spec (``model = "planted:fooled_gallery_model"``, tests/ on the path)."""
    return fooled_cnn()[0]


GALLERY_SPEC = """title = "planted fooling circuit"
model = "planted:fooled_gallery_model"
[images]
n = 160
k = 8
[render]
preset = "draft"
batch_size = 8
diverse = 0
[[layers]]
name = "act2"
units = "all"
[[layers]]
name = "logits"
units = "all"
"""
