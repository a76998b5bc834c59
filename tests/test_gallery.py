"""visfeat.gallery: specs are validated whole before any work, builds are keyed by recipe (incremental), a
killed build resumes with only the missing units, and a custom model builds through ``package.module:function``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gallery_model import site_files, spec_text  # tests/ is on sys.path under pytest, as for conftest's helpers

from visfeat.cli import main
from visfeat.gallery import SpecError, build_gallery, parse_spec
from visfeat.gallery.store import CACHE

TESTS = Path(__file__).parent


@pytest.fixture(autouse=True)
def _importable(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))  # gallery_model:tiny_gray
    monkeypatch.chdir(TESTS)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One small site, built once for the read-only checks."""
    sys.path.insert(0, str(TESTS))
    try:
        tmp = tmp_path_factory.mktemp("gallery")
        spec = tmp / "spec.toml"
        spec.write_text(spec_text())
        report = build_gallery(spec, tmp / "site", progress=False)
    finally:
        sys.path.remove(str(TESTS))
    return report


# --- spec errors: named key, line and fix; nothing written -------------------------------------------------


@pytest.mark.parametrize(
    "edit, expected",
    [
        (('units = "0-5"', 'unitz = "0-5"'), ["spec.toml:16", "layers[1].unitz", "did you mean 'units'"]),
        (("[render]", "[render]\nstepz = 3"), ["spec.toml:7", "render.stepz", "did you mean 'steps'"]),
        (('name = "3"', 'name = "33"'), ["spec.toml:15", "layers[1].name", "unknown layer '33'", "closest: 3"]),
        (('units = "0-5"', 'units = "0-40"'), ["spec.toml:16", "layers[1].units", "valid units: 0-11"]),
        (("[images]", '[images]\nfolder = "no/such/folder"'), ["spec.toml:4", "images.folder", "does not exist"]),
        (('from = ["3"]', 'from = ["bn9"]'), ["circuits[0].from", "unknown layer 'bn9'"]),
    ],
)
def test_bad_specs_name_key_line_and_fix_and_write_nothing(tmp_path, capsys, edit, expected):
    text = spec_text().replace(*edit, 1)
    spec = _write(tmp_path, text)
    out = tmp_path / "site"
    assert main(["gallery", "build", str(spec), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    for part in expected:
        assert part in err, err
    assert not out.exists()


def test_dry_run_prints_the_plan_and_an_estimate_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "site"
    assert main(["gallery", "build", str(_write(tmp_path, spec_text())), "-o", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    line = r"\n  3 +6 channel units  steps 6, views 1, constant, settle 0\.125, \+2 diverse, negative, batch 2\n"
    assert re.search(line, printed)
    assert "stage render      15 jobs, 29 units" in printed and "total about" in printed
    assert not out.exists()


def test_unwritable_output_and_unknown_preset(tmp_path, capsys):
    spec = _write(tmp_path, spec_text())
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["gallery", "build", str(spec), "-o", str(blocker / "site")]) == 2
    assert "cannot write to output folder" in capsys.readouterr().err
    with pytest.raises(SpecError, match=r"spec.toml:7: render.preset: unknown preset 'drfat'; closest: draft"):
        parse_spec(spec_text().replace("[render]", '[render]\npreset = "drfat"'), str(spec))
    with pytest.raises(SpecError, match=r"builds nothing"):
        parse_spec('model = "efficientnet_lite0"\n', "x.toml")


# --- a built site ------------------------------------------------------------------------------------------


def test_site_has_every_page_the_manifest_lists_and_escapes_labels(built):
    site = built.index.parent
    manifest = json.loads((site / "manifest.json").read_text())
    kinds = {s["name"]: s["kind"] for s in manifest["sections"]}
    assert kinds == {"1": "channel", "3": "channel", "5": "channel", "logits": "class", "sae-s4": "latent"}
    units = [u for s in manifest["sections"] for u in s["units"]]
    assert len(units) == 8 + 6 + 3 + 6 + 6 == built.units_rendered
    for u in units:
        for rel in [u["files"]["page"], u["files"]["image"], u["files"]["thumbnail"], *u["files"]["diverse"]]:
            assert (site / rel).is_file(), rel
        latent = u["unit"].startswith("4/s4:")
        assert u["command"].startswith("visfeat sae inspect " if latent else "visfeat render gallery_model:tiny_gray ")
        assert u["held_out"] is not None and u["best"] is not None
    page = (site / "tiny_gray/logits/0.html").read_text()
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<b>model</b>" not in (site / "index.html").read_text()
    unit = (site / "tiny_gray/3/2.html").read_text()
    for part in ("Wants", "Sees", "Built from", "feeds 5", "Lower quantiles", 'class="hist"', "How far to trust it"):
        assert part in unit, part
    assert "http://" not in unit and "https://" not in unit
    circuit = (site / "tiny_gray/circuits/5-3.html").read_text()
    assert 'href="../5/3.html"' in circuit  # the target links to its unit page
    assert "circuits/5-3.html" in (site / "tiny_gray/5/3.html").read_text()
    js = (site / "tiny_gray/logits/units.js").read_text()
    assert js.startswith("window.VF_UNITS = ") and "<img" not in js  # '<' escaped inside the data script


def test_incremental_rebuild_renders_only_the_layer_whose_recipe_changed(built, tmp_path):
    site = tmp_path / "site"
    import shutil

    shutil.copytree(built.index.parent, site)
    spec = _write(tmp_path, spec_text())
    same = build_gallery(spec, site, progress=False)
    assert sum(same.ran.values()) == 0 and same.units_reused == built.units_rendered
    changed = build_gallery(_write(tmp_path, spec_text(layer3_render="render = { steps = 7 }")), site, progress=False)
    assert changed.ran == {"render": 3, "paths": 1} and changed.units_rendered == 6  # 6 units of "3"
    recipe = json.loads((site / "manifest.json").read_text())["sections"][1]
    assert recipe["name"] == "3" and recipe["render"]["steps"] == 7


# --- resume after kill -9 ----------------------------------------------------------------------------------


def _cli(spec: Path, out: Path, importtime: bool = False) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1"}
    python = [sys.executable, "-X", "importtime"] if importtime else [sys.executable]
    cmd = python + ["-m", "visfeat.cli", "gallery", "build", str(spec), "-o", str(out), "--no-progress"]
    return subprocess.Popen(cmd, cwd=TESTS, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_killed_build_resumes_with_only_the_missing_units_and_equals_an_uninterrupted_one(tmp_path):
    spec = _write(tmp_path, spec_text(steps=40))
    site = tmp_path / "killed"
    proc = _cli(spec, site)
    renders = site / CACHE / "render"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(renders.glob("*/done.json"))) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list(renders.glob("*/done.json")))
    assert 3 <= finished < 15, finished  # killed in the middle of the render stage
    again = _cli(spec, site)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    total = 8 + 6 + 3 + 6 + 6
    resumed = int(out.split("units rendered ")[1].split(",")[0])
    reused = int(out.split("reused ")[1].split()[0])
    assert reused + resumed == total and 0 < resumed < total
    fresh = _cli(spec, tmp_path / "fresh", importtime=True)
    out, imports = fresh.communicate(timeout=300)
    assert out and fresh.returncode == 0
    imported = {line.split("|")[-1].strip() for line in imports.splitlines() if line.startswith("import time:")}
    assert "visfeat.gallery.executors" in imported  # -X importtime lists every module imported...
    assert not {m for m in imported if m == "ray" or m.startswith("ray.")}  # ...and without --ray, Ray is not
    a, b = site_files(site), site_files(tmp_path / "fresh")
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []
    assert not [p for p in site.rglob(".*") if p.is_file()]  # no temporary file left behind


# --- a ViT spec with token units -----------------------------------------------------------------------


@pytest.mark.slow
def test_vit_spec_builds_token_units(tmp_path):
    text = (Path(__file__).parents[1] / "gallery" / "dinov2.toml").read_text()
    spec = parse_spec(text, "dinov2.toml")
    assert any(layer.at for layer in spec.layers)  # the shipped spec names token units
    small = """title = "dinov2 small"
model = "dinov2_vits14_imgfocus"
[images]
n = 8
k = 2
[render]
steps = 3
diverse = 0
[[layers]]
name = "blocks.9.mlp.act"
units = "1000-1001"
at = "mean"
[[layers]]
name = "blocks.10.mlp.act"
units = [5]
at = "cls"
"""
    report = build_gallery(parse_spec(small, "small.toml"), tmp_path / "site", progress=False)
    assert report.units_rendered == 3
    manifest = json.loads((tmp_path / "site" / "manifest.json").read_text())
    units = [u["unit"] for s in manifest["sections"] for u in s["units"]]
    assert units == ["blocks.9.mlp.act:1000@mean", "blocks.9.mlp.act:1001@mean", "blocks.10.mlp.act:5@cls"]
    assert manifest["sections"][0]["kind"] == "token"
    assert (tmp_path / "site" / "dinov2_vits14_imgfocus" / "blocks.9.mlp.act" / "1000_mean.html").is_file()


@pytest.mark.parametrize("name", ["demo", "inceptionv1", "inceptionv1-full", "dinov2"])
def test_shipped_specs_validate_against_their_models(name):
    from dataclasses import replace

    from visfeat.gallery import load_gallery_model, load_spec, make_plan

    spec = load_spec(Path(__file__).parents[1] / "gallery" / f"{name}.toml")
    if name.startswith("inceptionv1"):
        spec = replace(spec, pretrained=False)  # its weights are a download; the layer catalogue is the same
    plan = make_plan(spec, load_gallery_model(spec, "cpu"))
    assert plan.by_stage("render") and all(s.units for s in plan.sections)
    if name == "inceptionv1-full":  # the whole model: every channel of mixed3a...mixed5b
        assert sum(len(s.units) for s in plan.sections) == 5484
    if name == "demo":  # what the README promises: a whole layer, four or more layers, ten classes, an SAE, a circuit
        sections = {s.name: s for s in plan.sections}
        assert len(sections["blocks.0"].units) == 16 and len([s for s in plan.sections if s.kind == "channel"]) >= 4
        assert len(sections["logits"].units) == 10 and len(sections["sae-blocks5-topk"].units) >= 16
        assert [j.task.unit for j in plan.by_stage("circuits")] == ["logit:sports_car"]


def test_backdoor_spec_names_weights_beside_it_and_a_one_round_scan():
    """gallery/backdoor.toml (its weights are planted by a benchmark, so only the spec is checked here): a diff
    gallery of the trojan against its twin, both files beside the spec, and the scan's budget as documented."""
    from visfeat.gallery import load_spec

    folder = Path(__file__).parents[1] / "gallery"
    spec = load_spec(folder / "backdoor.toml")
    assert Path(spec.weights) == folder / "backdoor" / "trojan0.pt"
    assert spec.base is not None and Path(spec.base.weights) == folder / "backdoor" / "twin0.pt"
    assert spec.scan is not None and (spec.scan.rounds, spec.scan.steps, spec.scan.classes) == (1, 100, 5)
    assert [layer.name for layer in spec.layers] == ["bn2", "logits"]


def test_the_command_on_a_unit_page_re_renders_its_picture_exactly(built, tmp_path):
    import shlex

    site = built.index.parent
    unit = json.loads((site / "manifest.json").read_text())["sections"][1]["units"][3]  # layer "3", second batch
    argv = shlex.split(unit["command"].split("   #")[0])
    assert argv[:2] == ["visfeat", "render"] and "--seed" in argv
    out = tmp_path / "rerender"
    argv[argv.index("-o") + 1] = str(out)
    assert main([*argv[1:], "--no-progress"]) == 0
    again = out / f"{unit['unit'].replace(':', '_')}.png"
    assert again.read_bytes() == (site / unit["files"]["image"]).read_bytes()


def test_the_command_on_an_sae_latent_page_re_renders_its_picture_exactly(built, tmp_path, monkeypatch):
    import shlex

    site = built.index.parent
    unit = json.loads((site / "manifest.json").read_text())["sections"][4]["units"][1]
    argv = shlex.split(unit["command"].split("   #")[0])
    assert argv[:3] == ["visfeat", "sae", "inspect"]
    argv[argv.index("-o") + 1] = str(tmp_path / "rerender")
    monkeypatch.chdir(site)  # the SAE file lives in the site's cache
    assert main([*argv[1:], "--no-progress"]) == 0
    again = tmp_path / "rerender" / f"latent_{unit['index']:04d}.png"
    assert again.read_bytes() == (site / unit["files"]["image"]).read_bytes()


def test_an_image_folder_and_a_saved_sae(built, tmp_path):
    """``[images] folder`` streams a folder of the user's images; ``[[saes]] path`` loads a trained SAE."""
    from visfeat.data import default_images
    from visfeat.images import save_image

    photos = tmp_path / "photos" / "some_class"
    photos.mkdir(parents=True)
    crops = default_images(n=6, size=48)
    for i in range(len(crops)):
        save_image(crops[i], photos / f"{i}.png")
    sae = next((built.index.parent / CACHE / "sae").glob("*/sae.safetensors"))
    text = f"""model = "gallery_model:tiny_gray"
[images]
folder = "photos"
k = 3
[render]
steps = 2
diverse = 0
[[layers]]
name = "3"
units = "0-1"
[[saes]]
layer = "4"
name = "loaded"
path = "{sae}"
latents = [2, 5]
"""
    report = build_gallery(_write(tmp_path, text), tmp_path / "site", progress=False)
    assert report.ran["sae"] == 1 and report.units_rendered == 4
    manifest = json.loads((tmp_path / "site" / "manifest.json").read_text())
    assert manifest["images"]["folder"] == str(tmp_path / "photos")  # relative to the spec's folder
    assert manifest["saes"][0]["trained"] is False and manifest["saes"][0]["metrics"]["fvu"] >= 0
    top = manifest["sections"][0]["units"][0]["top_examples"]
    assert len(top) == 3  # k examples from the 6 images of the folder
