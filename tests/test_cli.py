"""The ``visfeat render`` and ``visfeat layers`` commands, run in-process with the embedded EfficientNet-Lite0."""

from __future__ import annotations

import importlib
import json

import pytest
import torch
from PIL import Image

import visfeat
from visfeat.cli import main
from visfeat.images import load_image
from visfeat.presets import PRESETS
from visfeat.render import FOURIER_CUTOFF, FOURIER_CUTOFF_LONG

QUICK = ["--steps", "2", "--size", "32", "--no-progress", "--device", "cpu"]


def _forbid(monkeypatch, where, name: str):
    """Make ``where.name`` fail loudly: proves that an error came before that work started."""

    def boom(*args, **kwargs):
        raise AssertionError(f"{name} should not have been called")

    monkeypatch.setattr(where, name, boom)


def test_render_writes_png_and_sidecar_per_unit(tmp_path, capsys):
    out = tmp_path / "out" / "nested"
    units = ["blocks.2:3", "blocks.4:5@3,3", "logit:espresso"]
    rc = main(["render", "efficientnet_lite0", *units, "-o", str(out), "--batch-size", "2", "--seed", "4", *QUICK])
    assert rc == 0
    printed = capsys.readouterr().out
    files = sorted(p.name for p in out.iterdir())
    stems = ["blocks.2_3", "blocks.4_5_at_3_3", "logit_espresso"]
    assert files == sorted([f"{s}.png" for s in stems] + [f"{s}.json" for s in stems])
    for unit, stem, objective, seed in zip(
        units,
        stems,
        ["channel(blocks.2:3)", "neuron(blocks.4:5@3,3)", "class_logit(espresso)"],
        [4, 4, 6],  # --batch-size 2: the second run gets seed + 2
        strict=True,
    ):
        img = load_image(out / f"{stem}.png")
        assert img.shape == (3, 32, 32) and img.std() > 0.01
        side = json.loads((out / f"{stem}.json").read_text())
        assert side["unit"] == unit and side["objective"] == objective
        assert [v[0] for v in side["values"]] == [0, 1]
        assert side["final"] == pytest.approx(side["values"][-1][1], abs=1e-4)
        s = side["settings"]
        assert s["steps"] == 2 and s["seed"] == seed and s["model"] == "efficientnet_lite0" and s["device"] == "cpu"
        assert s["param"]["kind"] == "fourier" and s["param"]["size"] == 32 and s["lr"] == PRESETS["default"].lr
        assert side["versions"]["visfeat"] == visfeat.__version__ and side["versions"]["torch"] == torch.__version__
        assert f"{unit}: " in printed and str(out / f"{stem}.png") in printed
    assert not list(out.glob(".*")), "no temporary files are left behind"


def test_render_defaults_to_renders_param_at_the_models_input_size(tmp_path):
    """No --param/--size: render's default parameterization (Fourier at the input size, 32 px for tiny_cli);
    --param alone keeps that size."""
    fast = ["--steps", "1", "--no-progress", "--device", "cpu"]
    for extra, kind in [([], "fourier"), (["--param", "pixel"], "pixel")]:
        out = tmp_path / kind
        assert main(["render", "tiny_cli", "2:1", "-o", str(out), *extra, *fast]) == 0
        side = json.loads((out / "2_1.json").read_text())
        assert (side["settings"]["param"]["kind"], side["settings"]["param"]["size"]) == (kind, 32)
        assert Image.open(out / "2_1.png").size == (32, 32)


def test_render_default_image_follows_the_budget(tmp_path):
    """The CLI's default image is render's for the budget it runs: the narrower low-pass from LONG_RUN steps
    (the default preset), the wider one for the draft (a coarse unit: tiny_cli's pooled "4", 1x1 of 32 px)."""
    for preset, cutoff in [("draft", FOURIER_CUTOFF), ("default", FOURIER_CUTOFF_LONG)]:
        out = tmp_path / preset
        assert main(["render", "tiny_cli", "4:1", "-o", str(out), "--preset", preset, "--no-progress"]) == 0
        side = json.loads((out / "4_1.json").read_text())
        assert side["settings"]["steps"] == PRESETS[preset].steps
        assert side["settings"]["param"]["cutoff"] == cutoff


def test_render_param_choice(tmp_path):
    out = tmp_path / "maco"
    assert main(["render", "efficientnet_lite0", "blocks.3:1", "-o", str(out), "--param", "maco", *QUICK]) == 0
    side = json.loads((out / "blocks.3_1.json").read_text())
    assert side["settings"]["param"]["kind"] == "maco" and side["settings"]["param"]["size"] == 32


def test_unwritable_output_folder_is_a_clear_error_and_writes_nothing(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    # the check comes before loading the model
    _forbid(monkeypatch, importlib.import_module("visfeat.cli.render"), "load_model_from_args")
    rc = main(["render", "efficientnet_lite0", "blocks.2:3", "-o", str(blocker / "out"), *QUICK])
    assert rc == 2
    err = capsys.readouterr().err
    assert "visfeat render: error: cannot write to output folder" in err and "pick another folder with -o" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"] and blocker.read_text() == "x"


@pytest.mark.parametrize(
    "unit, message",
    [
        ("blokcs.4:3", "unknown layer 'blokcs.4'; closest: blocks.4"),
        ("blocks.4:112", r"channel 112 is out of range for layer 'blocks.4', which has 112 channels (0..111)"),
        ("logit:espreso", "unknown ImageNet class 'espreso'; closest: espresso"),
    ],
)
def test_bad_unit_is_an_error_before_any_optimization(tmp_path, capsys, monkeypatch, unit, message):
    _forbid(monkeypatch, importlib.import_module("visfeat.render"), "render")  # visfeat.render is the function
    out = tmp_path / "out"
    rc = main(["render", "efficientnet_lite0", "blocks.2:3", unit, "-o", str(out), *QUICK])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # not even an empty folder is left behind


def test_unparsable_unit_is_an_error_before_loading_the_model(tmp_path, capsys, monkeypatch):
    _forbid(monkeypatch, importlib.import_module("visfeat.cli.render"), "load_model_from_args")
    rc = main(["render", "efficientnet_lite0", "blocks.2", "-o", str(tmp_path / "out"), *QUICK])
    assert rc == 2
    assert "cannot parse unit 'blocks.2'; expected layer:channel" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unknown_model_is_a_clear_error(tmp_path, capsys):
    rc = main(["render", "efficientnet_lite9", "blocks.2:3", "-o", str(tmp_path / "out"), *QUICK])
    assert rc == 2
    assert "unknown model 'efficientnet_lite9'; closest: efficientnet_lite" in capsys.readouterr().err


def test_layers_prints_the_catalogue(capsys):
    assert main(["layers", "efficientnet_lite0", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("efficientnet_lite0: input (224, 224)")
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert rows["conv_stem"][:3] == ["Conv2dSame", "32x112x112", "CHW"]
    assert rows["blocks.4"][:2] == ["Sequential", "112x14x14"]
    assert rows["logits"][:2] == ["output", "1000"]
    assert len(rows) == len(visfeat.load_model("efficientnet_lite0").layers)


def test_layers_filter(capsys):
    assert main(["layers", "efficientnet_lite0", "--filter", "blocks.?", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == [f"blocks.{i}" for i in range(7)]


def test_render_requires_units_and_output(capsys):
    with pytest.raises(SystemExit) as e:
        main(["render", "efficientnet_lite0", "blocks.2:3"])
    assert e.value.code == 2
    assert "-o/--out" in capsys.readouterr().err


def test_render_views_and_lr_schedule_reach_render_and_the_sidecar(tmp_path):
    out = tmp_path / "v"
    assert main(["render", "tiny_cli", "2:1", "-o", str(out), "--views", "2", "--lr-schedule", "cosine", *QUICK]) == 0
    s = json.loads((out / "2_1.json").read_text())["settings"]
    assert s["views"] == 2 and s["lr_schedule"] == "cosine"


def test_render_preset_sets_the_budget_and_explicit_options_override_it(tmp_path):
    quick = [q for q in QUICK if q not in ("--steps", "2")]
    out = tmp_path / "p"
    assert (
        main(["render", "tiny_cli", "2:1", "-o", str(out), "--preset", "heavy", "--steps", "2", "--views", "1", *quick])
        == 0
    )
    s = json.loads((out / "2_1.json").read_text())["settings"]
    heavy = visfeat.get_preset("heavy")
    assert (s["steps"], s["views"]) == (2, 1) and (s["lr"], s["lr_schedule"]) == (heavy.lr, heavy.lr_schedule)


def test_render_unknown_preset_names_the_closest_before_any_work(tmp_path, capsys, monkeypatch):
    _forbid(monkeypatch, importlib.import_module("visfeat.cli.render"), "load_model_from_args")
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as e:
        main(["render", "tiny_cli", "2:1", "-o", str(out), "--preset", "drat"])
    assert e.value.code == 2
    assert "unknown preset 'drat'; closest: draft" in capsys.readouterr().err
    assert not out.exists()


def test_sae_inspect_takes_the_same_render_options_as_render():
    from visfeat.cli import build_parser
    from visfeat.cli.options import render_options

    for command in (["render", "tiny_cli", "2:1", "-o", "x"], ["sae", "inspect", "x.safetensors"]):
        options = ["--preset", "draft", "--views", "2", "--lr-schedule", "cosine", "--settle", "0.25"]
        args = build_parser().parse_args([*command, *options])
        assert render_options(args) == {
            "preset": "draft",
            "steps": None,
            "lr": None,
            "lr_schedule": "cosine",
            "views": 2,
            "settle": 0.25,
        }


@pytest.mark.parametrize("flag", ["--views", "--steps", "--batch-size", "--size"])
def test_render_counts_must_be_positive_before_any_work(tmp_path, capsys, flag):
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as e:
        main(["render", "tiny_cli", "2:1", "-o", str(out), flag, "0"])
    assert e.value.code == 2
    assert f"argument {flag}: must be a positive integer, got '0'" in capsys.readouterr().err
    assert not out.exists()


def test_render_expands_ranges_lists_and_all(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["render", "tiny_cli", "2:0-2", "2:1,5", "0:all@center", "-o", str(out), *QUICK]) == 0
    stems = sorted(p.stem for p in out.glob("*.png"))
    assert stems == sorted(["2_0", "2_1", "2_2", "2_5"] + [f"0_{i}_at_center" for i in range(8)])  # 2:1 once


def test_render_range_out_of_the_layer_is_an_error_before_any_output(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["render", "tiny_cli", "2:10-17", "-o", str(out), *QUICK]) == 2
    assert "2:10-17: out of range: 16, 17; there are 16 channels in layer '2' (0..15)" in capsys.readouterr().err
    assert not out.exists()


def test_render_preacts_by_default_and_no_preact_turns_it_off(tmp_path):
    """tiny_cli's layer "3" is a ReLU: by default its unit is optimized on its input, layer "2"."""
    on, off = tmp_path / "on", tmp_path / "off"
    assert main(["render", "tiny_cli", "3:1", "2:1", "-o", str(on), *QUICK]) == 0
    assert main(["render", "tiny_cli", "3:1", "-o", str(off), "--no-preact", *QUICK]) == 0
    side_on = json.loads((on / "3_1.json").read_text())
    assert side_on["objective"] == "channel(2:1)[preact of 3:1]" and side_on["settings"]["preact"] is True
    assert json.loads((on / "2_1.json").read_text())["objective"] == "channel(2:1)"  # a conv: unchanged
    side_off = json.loads((off / "3_1.json").read_text())
    assert side_off["objective"] == "channel(3:1)" and side_off["settings"]["preact"] is False
