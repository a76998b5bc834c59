"""``visfeat examples`` end to end on a tiny registered model and a folder of images."""

from __future__ import annotations

import pytest

from visfeat.cli import main
from visfeat.cli.examples import parse_units
from visfeat.errors import VisfeatError

# the model 'tiny_cli' is registered in conftest.py


def test_examples_command_writes_results_and_strips(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(9):
        sub = tmp_path / "imgs" / f"class{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((30 + i, 44, 3)) * 255).astype(np.uint8)).save(sub / f"{i}.jpg")
    out = tmp_path / "ex"
    rc = main(
        [
            "examples",
            "tiny_cli",
            "3",
            "--images",
            str(tmp_path / "imgs"),
            "-k",
            "3",
            "-o",
            str(out),
            "--units",
            "0-2",
            "--no-progress",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    assert (out / "examples.safetensors").exists() and (out / "unit_0002.png").exists()
    assert "16 units x 3 examples over 9 images" in capsys.readouterr().out
    rc = main(["examples", "tiny_cli", "3", "--images", str(tmp_path / "nothing"), "-o", str(out)])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    rc = main(
        ["examples", "tiny_cli", "3", "--images", str(tmp_path / "imgs"), "-k", "3", "-o", str(out), "--units", "99"]
    )
    assert rc == 2 and "out of range" in capsys.readouterr().err


def test_parse_units():
    assert parse_units("0-2,7", 10) == [0, 1, 2, 7] and parse_units("none", 3) == [] and len(parse_units("all", 4)) == 4
    with pytest.raises(VisfeatError, match="cannot parse"):
        parse_units("a-b", 3)
