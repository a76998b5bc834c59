"""Shared test settings: one CPU thread for the fast tests (tiny models gain nothing from more and suffer on
a busy machine), every core for the slow quality tests. Set before each test's fixtures run."""

from __future__ import annotations

import os

import pytest
import torch
from helpers import conv_net

import visfeat as vf
from visfeat.models import register_model


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    torch.set_num_threads((os.cpu_count() or 1) if item.get_closest_marker("slow") else 1)


def _tiny_cli(weights=None, pretrained=True) -> vf.Model:
    """The small CNN of ``helpers.conv_net``, registered as ``tiny_cli`` so CLI tests can name it."""
    return conv_net(width=16, name="tiny_cli")


register_model("tiny_cli")(_tiny_cli)
