"""Issue 2's quality bars with the render defaults on the real EfficientNet-Lite0 (benchmarks/quality.py).

Class-logit images must be top-1 on Lite0 itself for 10 of 10 classes and on EfficientNet-Lite1 (another
model) for at least 8 of 10; 16 ``blocks.4`` channel images must reach a median of 6x and a minimum of
3x the channel's largest activation over random crops of the sample photos, held out.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import quality  # noqa: E402  (the benchmark script is the single source of the measurement)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def channels() -> dict:
    return quality.run_channels(steps=256, seed=0)


def test_class_logit_images_are_recognized_by_the_model_and_by_lite1():
    result = quality.run_classes(steps=256, seed=0)
    assert result["top1_lite0"] == 10, result["rank_lite0"]
    assert result["top1_lite1"] >= 8, result["rank_lite1"]


def test_channel_images_median_beats_the_photos_6x(channels):
    assert channels["median"] >= 6.0, channels["ratios"]


@pytest.mark.xfail(
    strict=True,
    reason="unmet bar of issue 2 (marked blocked): blocks.4:70, a detector of flat colour regions, "
    "reaches 2.4x with the defaults "
    "(3.03x only with 128 times the compute: render(steps=4096, views=8, lr_schedule='cosine'); a 2x supersampled "
    "image scores 3.25x direct but 2.45x held out; optimized with no transforms at all, 3.6x direct); "
    "see docs/quality.md",
)
def test_channel_images_minimum_beats_the_photos_3x(channels):
    assert channels["min"] >= 3.0, channels["ratios"]
