"""Shared test settings: one CPU thread for the fast tests (tiny models gain nothing from more and suffer on
a busy machine), every core for the slow quality tests. Set before each test's fixtures run."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

import visfeat as vf
from visfeat.models import register_model


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    torch.set_num_threads((os.cpu_count() or 1) if item.get_closest_marker("slow") else 1)


def _tiny_cli(weights=None, pretrained=True) -> vf.Model:
    """A small CNN registered as ``tiny_cli``, so CLI tests can name a model by string."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )
    return vf.Model(net, vf.InputSpec(size=(32, 32)), name="tiny_cli")


register_model("tiny_cli")(_tiny_cli)
