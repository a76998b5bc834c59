"""Small models and datasets shared by the tests (random weights, fixed seeds, 32 px inputs)."""

from __future__ import annotations

import torch
from torch import nn

import visfeat as vf
from visfeat.data import CropSet


def conv_net(width: int = 16, extra_conv: bool = False, name: str = "tiny") -> vf.Model:
    """``Sequential`` CNN: conv(3->8, s2) "0", ReLU "1", conv(8->width, s2) "2", ReLU "3", optionally a
    conv(width->width) "4", then pooling and a 10-way classifier. Layer names are the indices."""
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU()]
    layers += [nn.Conv2d(8, width, 3, stride=2, padding=1), nn.ReLU()]
    if extra_conv:
        layers.append(nn.Conv2d(width, width, 3, padding=1))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10)]
    return vf.Model(nn.Sequential(*layers), vf.InputSpec(size=(32, 32)), name=name)


class Interrupting(CropSet):
    """A dataset that raises KeyboardInterrupt when item ``stop_at`` is read (a user pressing Ctrl-C)."""

    stop_at: int = -1

    def __getitem__(self, i):
        if i == self.stop_at:
            raise KeyboardInterrupt
        return super().__getitem__(i)
