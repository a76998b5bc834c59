"""Shared test settings: one CPU thread for the fast tests (tiny models gain nothing from more and suffer on
a busy machine), every core for the slow quality tests. Set before each test's fixtures run."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    torch.set_num_threads((os.cpu_count() or 1) if item.get_closest_marker("slow") else 1)
