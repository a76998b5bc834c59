"""A small custom model for the gallery tests, loaded as ``gallery_model:tiny_gray`` (``package.module:function``).

One input channel (a grayscale model with default normalization), ReLU layers, and class labels that
include markup, which every page must show as text."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import visfeat as vf
from visfeat.gallery.store import CACHE

XSS = "<img src=x onerror=alert(1)>"
LABELS = (XSS, "stripes", "spots", "edges", 'quote " and & amp', "blobs")


def tiny_gray() -> vf.Model:
    """conv(1->8) "0", ReLU "1", conv(8->12) "2", ReLU "3", conv(12->12) "4", ReLU "5", pool, 6 classes "8"."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 12, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(12, 12, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(12, len(LABELS)),
    )
    return vf.Model(net, vf.InputSpec(size=(32, 32), channels=1), name="tiny_gray", labels=LABELS)


SPEC = """title = "custom <b>model</b>"
model = "gallery_model:tiny_gray"
[images]
n = 40
k = 4
[render]
steps = {steps}
batch_size = 2
diverse = 2
negative = true
[[layers]]
name = "1"
units = "all"
[[layers]]
name = "3"
units = "0-5"
{layer3_render}
[[layers]]
name = "5"
units = [0, 3, 7]
[[layers]]
name = "logits"
units = "all"
[[saes]]
layer = "4"
name = "s4"
latents = "0-5"
expansion = 2
k = 4
epochs = 1
images = 40
[[circuits]]
unit = "5:3"
from = ["3"]
k = 2
"""


def spec_text(steps: int = 6, layer3_render: str = "") -> str:
    """The gallery tests' spec for this model: every kind of section (channels, classes, SAE latents) and a circuit."""
    return SPEC.format(steps=steps, layer3_render=layer3_render)


def site_files(site: Path) -> dict[str, bytes]:
    """Every file of a built site but its result store, by relative path: two builds are compared byte for byte."""
    return {
        p.relative_to(site).as_posix(): p.read_bytes()
        for p in sorted(site.rglob("*"))
        if p.is_file() and not p.relative_to(site).as_posix().startswith(CACHE)
    }


def tiny_gray_changed() -> vf.Model:
    """``tiny_gray`` with one pathway changed (a diff gallery's model; ``tiny_gray`` is its base): channel 3 of
    conv "4" gets a new filter and a higher bias, and class 2 ("spots") now reads that channel."""
    model = tiny_gray()
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        model.module[4].weight[3] += 0.5 * torch.randn(model.module[4].weight[3].shape, generator=g)
        model.module[4].bias[3] += 0.5
        model.module[-1].weight[2, 3] += 3.0
    return vf.Model(model.module, model.spec, name="tiny_gray_changed", labels=LABELS)
