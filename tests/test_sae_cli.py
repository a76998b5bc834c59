"""``visfeat sae train`` / ``visfeat sae inspect`` end to end on a tiny registered model."""

from __future__ import annotations

import json

import pytest

from visfeat.cli import main

# the model 'tiny_cli' is registered in conftest.py


@pytest.fixture
def folder(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(10):
        Image.fromarray((rng.random((36, 40, 3)) * 255).astype(np.uint8)).save(d / f"{i}.png")
    return d


def test_sae_train_then_inspect(tmp_path, folder, capsys):
    out = tmp_path / "sae" / "tiny"
    args = ["sae", "train", "tiny_cli", "2", "-o", str(out), "--images", str(folder), "--test-images", str(folder)]
    rc = main([*args, "--expansion", "2", "-k", "4", "--epochs", "3", "--batch-size", "256", "--no-progress"])
    assert rc == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["config"]["layer"] == "2" and meta["config"]["d_sae"] == 32
    assert 0 <= meta["metrics"]["fvu"] < 1.5 and "effect_kl" in meta["metrics"]
    assert "held-out FVU" in capsys.readouterr().out
    rc = main(
        [
            "sae",
            "inspect",
            str(out) + ".safetensors",
            "--render",
            "0,1",
            "--steps",
            "4",
            "-o",
            str(tmp_path / "insp"),
            "--examples",
            "0",
            "--images",
            str(folder),
            "--no-progress",
        ]
    )
    assert rc == 0
    assert (tmp_path / "insp" / "latent_0001.png").exists() and (
        tmp_path / "insp" / "latent_0000_examples.png"
    ).exists()
    # a corrupt weights file is an error even when inspect only prints the config
    weights = out.with_suffix(".safetensors")
    weights.write_bytes(b"garbage")
    rc = main(["sae", "inspect", str(out)])
    assert rc == 2 and "corrupt" in capsys.readouterr().err


def test_sae_cli_bad_input_errors(tmp_path, folder, capsys):
    rc = main(
        [
            "sae",
            "train",
            "tiny_cli",
            "2",
            "-o",
            str(tmp_path / "x"),
            "--images",
            str(folder),
            "-k",
            "64",
            "--expansion",
            "2",
        ]
    )
    assert rc == 2 and "k=64 is not in 1..32" in capsys.readouterr().err
    assert not (tmp_path / "x_acts").exists()  # failed before any work
    (tmp_path / "empty").mkdir()
    rc = main(["sae", "train", "tiny_cli", "2", "-o", str(tmp_path / "y"), "--images", str(tmp_path / "empty")])
    assert rc == 2 and "contains no image files" in capsys.readouterr().err
    (tmp_path / "z.json").write_text("[]")
    rc = main(["sae", "inspect", str(tmp_path / "z")])
    assert rc == 2 and "not a visfeat SAE config" in capsys.readouterr().err
