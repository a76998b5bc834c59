"""``batch_size = "auto"`` and ``amp = "auto"`` in gallery specs: accepted and the defaults, resolved by
``make_plan`` for the model's device before any recipe is hashed (CPU: 32 units and no autocast, so the keys
of CPU galleries are those of an explicit ``batch_size = 32``), bad values named with their key and line,
and the CUDA batch picked from memory as the largest power of two that fits."""

from __future__ import annotations

import pytest
import torch
from helpers import conv_net

import visfeat as vf
from visfeat.gallery import SpecError, make_plan, parse_spec
from visfeat.gallery import auto as P
from visfeat.gallery.spec import RenderSettings

SPEC = """model = "tiny"
[render]
steps = 4
{render}
[[layers]]
name = "2"
units = "all"
{layer}
[[circuits]]
unit = "3:1"
from = ["2"]
"""


def _spec(render: str = "", layer: str = ""):
    return parse_spec(SPEC.format(render=render, layer=layer), "spec.toml")


def _model() -> vf.Model:
    return conv_net(width=40)  # layer "2": 40 channels, more than one CPU batch


def _keys(plan) -> list[tuple[str, str, tuple]]:
    return [(j.stage, j.key, j.slugs) for j in plan.jobs]


def test_auto_is_the_default_and_resolves_on_cpu_to_the_keys_of_batch_32():
    assert RenderSettings().batch_size == "auto" and RenderSettings().amp == "auto"
    spec = _spec()
    assert spec.render.batch_size == "auto" and spec.layers[0].render.amp == "auto"
    model = _model()
    plan = make_plan(spec, model)
    r = plan.sections[0].settings
    assert r.batch_size == 32 and r.amp is None
    assert r.recipe()["batch_size"] == 32 and r.recipe()["amp"] is None
    assert [len(j.slugs) for j in plan.by_stage("render")] == [32, 8]
    explicit = make_plan(_spec('batch_size = 32\namp = "none"'), model)
    assert _keys(plan) == _keys(explicit)
    other = make_plan(_spec("batch_size = 16"), model)
    assert [len(j.slugs) for j in other.by_stage("render")] == [16, 16, 8]
    assert {j.key for j in other.by_stage("render")}.isdisjoint(j.key for j in plan.by_stage("render"))


def test_explicit_amp_is_kept_and_none_turns_it_off():
    assert _spec('amp = "bf16"').render.amp == "bf16"
    assert _spec('amp = "fp16"').layers[0].render.amp == "fp16"
    assert _spec('amp = "none"').render.amp is None
    assert _spec(layer='render = { amp = "none", batch_size = 8 }').layers[0].render.batch_size == 8


@pytest.mark.parametrize(
    "render, layer, where, message",
    [
        ("batch_size = 0", "", "spec.toml:4: render.batch_size", "must be at least 1, got 0"),
        ("", "render = { batch_size = -3 }", "spec.toml:8: layers[0].render.batch_size", "must be at least 1"),
        ('batch_size = "big"', "", "render.batch_size", 'must be a number of units (at least 1) or "auto"'),
        ("batch_size = 2.5", "", "render.batch_size", 'or "auto", got 2.5'),
        ("batch_size = true", "", "render.batch_size", 'or "auto", got True'),
        (
            'amp = "fp8"',
            "",
            "spec.toml:4: render.amp",
            "unknown value str 'fp8'; choose 'auto', 'bf16', 'fp16', 'none'",
        ),
        ("", 'render = { amp = "AUTO" }', "layers[0].render.amp", "unknown value str 'AUTO'"),
    ],
)
def test_bad_batch_size_and_amp_name_the_key(render, layer, where, message):
    with pytest.raises(SpecError) as e:
        _spec(render, layer)
    assert where in str(e.value) and message in str(e.value), str(e.value)


def test_fit_batch_is_the_largest_power_of_two_that_fits():
    gib, mib = 2**30, 2**20
    assert P.fit_batch(10 * gib, 50 * mib, 0, 1) == 128  # 0.8 * 10 GiB / 50 MiB = 163 units
    assert P.fit_batch(10 * gib, 50 * mib, 0, 2) == 64  # the diverse render: two images per unit
    assert P.fit_batch(10 * gib, 50 * mib, 4 * gib, 1) == 64  # 4 GiB that do not grow with the batch
    assert P.fit_batch(1000 * gib, mib, 0, 2) == P.MAX_BATCH == 512
    assert P.fit_batch(100 * mib, 200 * mib, 0, 1) == 1  # not even one: one unit at a time
    assert P.fit_batch(gib, mib, 2 * gib, 1) == 1


class _OnDevice(vf.Model):
    """A CPU model that reports another device (only the planning code reads it)."""

    kind = "cuda"

    @property
    def device(self) -> torch.device:
        return torch.device(self.kind)


def test_on_cuda_auto_asks_the_memory_probe_with_amp_resolved_first(monkeypatch):
    model = _model()
    fake = _OnDevice(model.module, model.spec, model.name)
    seen = []
    monkeypatch.setattr(P, "auto_batch_size", lambda m, r, unit: seen.append((r.amp, unit)) or 128)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    r = P.resolve_settings(fake, RenderSettings(), "2:0")
    assert (r.batch_size, r.amp) == (128, "bf16") and seen == [("bf16", "2:0")]
    fixed = RenderSettings(batch_size=8, amp=None)
    assert P.resolve_settings(fake, fixed, "2:0") == fixed
    assert P.resolve_settings(fake, RenderSettings()).batch_size == P.CPU_BATCH  # no unit (circuits): no probe
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert P.resolve_settings(fake, RenderSettings(), "2:0").amp is None
    fake.kind = "mps"
    r = P.resolve_settings(fake, RenderSettings(), "2:0")
    assert (r.batch_size, r.amp) == (32, None) and len(seen) == 2
