"""Bad gallery specs are refused before any compute: the error names the key (and its line) and the fix, and the
output folder is never created. Each table of the spec, with the values a user will try: NaN, infinities, zero,
negative numbers, wrong types, duplicates, too many examples, a model function that cannot be called."""

from __future__ import annotations

from pathlib import Path

import pytest
from gallery_model import spec_text

from visfeat.cli import main

TESTS = Path(__file__).parent


@pytest.fixture(autouse=True)
def _importable(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))  # gallery_model:tiny_gray
    monkeypatch.chdir(TESTS)


def _edit(old: str, new: str) -> str:
    text = spec_text()
    assert old in text, old
    return text.replace(old, new, 1)


CASES = {
    # the five
    "lr nan": (_edit("[render]", "[render]\nlr = nan"), ["spec.toml:7", "render.lr", "finite number, got nan"]),
    "lr inf": (spec_text(layer3_render="render = { lr = inf }"), ["layers[1].render.lr", "finite number, got inf"]),
    "k > n": (_edit("k = 4\n[render]", "k = 100000\n[render]"), ["images.k", "100000", "n = 40", "lower k"]),
    "model os:system": (_edit('"gallery_model:tiny_gray"', '"os:system"'), ["os:system", "no required arguments"]),
    "units twice": (_edit("units = [0, 3, 7]", "units = [1, 1, 2]"), ["layers[2].units", "1 is listed twice"]),
    # their siblings, table by table
    "lr -inf": (_edit("[render]", "[render]\nlr = -inf"), ["render.lr", "finite"]),
    "lr zero": (_edit("[render]", "[render]\nlr = 0"), ["render.lr", "must be above 0"]),
    "lr negative": (_edit("[render]", "[render]\nlr = -0.1"), ["render.lr", "above 0, got -0.1"]),
    "lr string": (_edit("[render]", '[render]\nlr = "fast"'), ["render.lr", "expected a number, got str"]),
    "steps zero": (_edit("steps = 6", "steps = 0"), ["spec.toml:7", "render.steps", "at least 1, got 0"]),
    "steps float": (_edit("steps = 6", "steps = 6.5"), ["render.steps", "whole number, got float 6.5"]),
    "views negative": (spec_text(layer3_render="render = { views = -2 }"), ["layers[1].render.views", "at least 1"]),
    "seed negative": (_edit("[render]", "[render]\nseed = -1"), ["render.seed", "at least 0, got -1"]),
    "diverse negative": (_edit("diverse = 2", "diverse = -1"), ["render.diverse", "at least 0"]),
    "weight nan": (_edit("[render]", "[render]\ndiversity_weight = nan"), ["render.diversity_weight", "finite"]),
    "schedule": (_edit("[render]", '[render]\nlr_schedule = "linear"'), ["render.lr_schedule", "'cosine'"]),
    "negative string": (_edit("negative = true", 'negative = "yes"'), ["render.negative", "true or false"]),
    "preset": (_edit("[render]", '[render]\npreset = "drafts"'), ["render.preset", "closest: draft"]),
    "settle one": (_edit("[render]", "[render]\nsettle = 1"), ["render.settle", "in [0, 1)", "got 1"]),
    "settle negative": (spec_text(layer3_render="render = { settle = -0.5 }"), ["layers[1].render.settle", "got -0.5"]),
    "n zero": (_edit("n = 40", "n = 0"), ["images.n", "at least 1, got 0"]),
    "k negative": (_edit("k = 4\n[render]", "k = -4\n[render]"), ["images.k", "at least 1"]),
    "n float": (_edit("n = 40", "n = 4e1"), ["images.n", "whole number"]),
    "units overlap": (_edit('units = "0-5"', 'units = "0-5,3"'), ["layers[1].units", "3 is selected twice"]),
    "units empty": (_edit("units = [0, 3, 7]", "units = []"), ["layers[2].units", "selects no units"]),
    "units float": (_edit("units = [0, 3, 7]", "units = [0.5]"), ["layers[2].units", "got 0.5"]),
    "layer name empty": (_edit('name = "5"', 'name = ""'), ["layers[2].name", "non-empty string"]),
    "at empty": (_edit('name = "5"', 'name = "5"\nat = ""'), ["layers[2].at", "non-empty string"]),
    "sae epochs nan": (_edit("epochs = 1", "epochs = nan"), ["saes[0].epochs", "finite"]),
    "sae epochs zero": (_edit("epochs = 1", "epochs = 0"), ["saes[0].epochs", "above 0"]),
    "sae epochs inf": (_edit("epochs = 1", "epochs = inf"), ["saes[0].epochs", "finite"]),
    "sae expansion": (_edit("expansion = 2", "expansion = 0"), ["saes[0].expansion", "at least 1"]),
    "sae k": (_edit("k = 4\nepochs", "k = 0\nepochs"), ["saes[0].k", "at least 1"]),
    "sae images": (_edit("images = 40", "images = -5"), ["saes[0].images", "at least 1"]),
    "sae name": (_edit('name = "s4"', 'name = "../s4"'), ["saes[0].name", "letters, digits"]),
    "sae latents twice": (_edit('latents = "0-5"', "latents = [2, 2]"), ["saes[0].latents", "listed twice"]),
    "circuit k": (_edit("k = 2\n", "k = 0\n"), ["circuits[0].k", "at least 1"]),
    "circuit width": (_edit("k = 2\n", "k = 2\nwidth = -1\n"), ["circuits[0].width", "at least 1"]),
    "circuit name": (_edit("k = 2\n", 'k = 2\nname = "../x"\n'), ["circuits[0].name", "letters, digits"]),
    "circuit from empty": (_edit('from = ["3"]', "from = []"), ["circuits[0].from", "a list of layers"]),
    "title number": (_edit('title = "custom <b>model</b>"', "title = 3"), ["title", "non-empty string, got int"]),
    "model empty": (_edit('"gallery_model:tiny_gray"', '""'), ["model", "non-empty string"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_spec_is_refused_naming_its_key_and_writes_nothing(case, tmp_path, capsys):
    text, expected = CASES[case]
    spec = tmp_path / "spec.toml"
    spec.write_text(text)
    out = tmp_path / "site"
    assert main(["gallery", "build", str(spec), "-o", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for part in expected:
        assert part in err, err
    assert not out.exists()
