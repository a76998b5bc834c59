"""Diff galleries: a spec with ``[base]`` and ``[scan]`` builds, for a model with one pathway changed by hand
(``gallery_model:tiny_gray_changed`` against ``tiny_gray``), the change of every unit (manifest, grid sort, unit
page with both models' pictures and the diff visualization), a "changed most" page and index panel that put the
changed pathway first, and the trigger search's page; the spec's new tables are checked with the fix named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_gallery_browser import HERE, browser, check_page, page, url  # noqa: F401 (fixtures)

from visfeat.errors import VisfeatError
from visfeat.gallery import SpecError, build_gallery, parse_spec

MODEL = "tiny_gray_changed"
SPEC = """title = "what changed"
model = "gallery_model:tiny_gray_changed"
base = "gallery_model:tiny_gray"
[images]
n = 32
k = 4
[render]
steps = 6
batch_size = 6
diverse = 0
[[layers]]
name = "4"
units = "all"
[[layers]]
name = "logits"
units = "all"
[scan]
classes = 3
steps = 12
images = 8
"""


@pytest.fixture(scope="module")
def diff_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("diff-site")
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(HERE))
        build_gallery(parse_spec(SPEC, "diff.toml"), out, progress=False)
    return out


def _manifest(site: Path) -> dict:
    return json.loads((site / "manifest.json").read_text())


def test_manifest_ranks_the_changed_pathway_first(diff_site: Path) -> None:
    m = _manifest(diff_site)
    assert m["base"]["model"] == "gallery_model:tiny_gray"
    units = {u["unit"]: u for s in m["sections"] for u in s["units"]}
    changed = units["4:3"]["change"]
    assert changed["rank"] == 1 and changed["rank_weight"] == 1 and changed["of"] == 12 and changed["activation"] > 1
    assert all(units[f"4:{i}"]["change"]["activation"] == 0 for i in range(12) if i != 3)
    assert units["logit:2"]["change"]["rank_weight"] == 1 and units["logit:2"]["change"]["rank"] == 1
    scanned = {c["index"] for c in m["scan"]["classes"]}
    assert len(scanned) == 3  # the three classes the change raised most; only their pages carry a search
    assert all(("scan" in units[f"logit:{c}"]) == (c in scanned) for c in range(6))
    for suffix in ("changed", "base", "diff"):
        assert (diff_site / MODEL / "4" / "img" / f"3_{suffix}.png").is_file()


def test_pages_show_what_changed(diff_site: Path, page) -> None:  # noqa: F811
    page.goto(url(diff_site, "index.html"))
    check_page(page)
    first = page.locator("section.diff-summary .row.changed").first.locator("a.tile span").first.inner_text()
    assert first == "4:3"  # the changed channel leads the index's "changed most"
    assert page.locator("section.scan-summary").count() == 1
    page.goto(url(diff_site, f"{MODEL}/diff/changed-most.html"))
    check_page(page)
    assert page.locator("section.diff-summary h3").count() == 2
    page.goto(url(diff_site, f"{MODEL}/4/3.html"))
    check_page(page, min_images=4)
    captions = page.locator(".diffpics figcaption").all_inner_texts()
    assert captions == ["changed model", "base model", "changed − base"]
    assert "#1 of 12" in page.locator("#changed + .row + p + table").inner_text()
    sees = page.locator(".diffsees")  # the photos the unit sees most: the changed model's, then the base model's
    assert sees.count() == 2 and all(sees.nth(i).locator("img").count() == 4 for i in range(2))
    page.goto(url(diff_site, f"{MODEL}/4/index.html"))
    page.wait_for_selector("#grid a.cell")
    page.select_option("#sort", "change")
    shown = page.eval_on_selector_all("#grid a.cell", "els => els.map(e => e.getAttribute('href'))")
    assert shown[0] == "3.html"
    page.goto(url(diff_site, f"{MODEL}/scan/suspected-backdoors.html"))
    check_page(page)
    assert page.locator("table.scan tr").count() == 1 + 3


def test_screenshots_of_the_diff_pages(diff_site: Path, page, tmp_path: Path) -> None:  # noqa: F811
    """Full-page PNGs of the index, the suspected-backdoors page, the changed-most page and the changed class's page,
    after the usual page checks. By default of the small site; the docs' pictures come from gallery/backdoor.toml:
    ``VISFEAT_SITE=site-backdoor VISFEAT_SCREENSHOTS=docs/img pytest tests/test_diff_gallery.py -k screenshots``
    (its class page is 986, the planted target)."""
    import os

    from PIL import Image

    built = os.environ.get("VISFEAT_SITE")
    root = Path(built) if built else diff_site
    shots = Path(os.environ.get("VISFEAT_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    model, cls = ("efficientnet_lite0", 986) if built else (MODEL, 2)
    pages = {
        "diff_index.png": "index.html",
        "diff_suspects.png": f"{model}/scan/suspected-backdoors.html",
        "diff_changed_most.png": f"{model}/diff/changed-most.html",
        "diff_class.png": f"{model}/logits/{cls}.html",
    }
    for name, rel in pages.items():
        assert (root / rel).is_file(), f"{root / rel} does not exist: is VISFEAT_SITE a built diff gallery?"
        page.goto(url(root, rel))
        check_page(page)
        page.evaluate("scrollTo(0, 0)")
        page.screenshot(path=str(shots / name), full_page=True)
        with Image.open(shots / name) as im:
            assert im.width == 1400 and im.height >= 450


@pytest.mark.parametrize(
    "edit, expected",
    [
        (('base = "gallery_model:tiny_gray"', '[base]\nweight = "x.pt"'), ["base.weight", "did you mean 'weights'"]),
        (("classes = 3", "classes = 0"), ["scan.classes", "at least 1"]),
        (("images = 8", "images = 4"), ["scan.images", "at least 8"]),
    ],
)
def test_spec_errors_name_the_key_and_fix(edit: tuple[str, str], expected: list[str]) -> None:
    with pytest.raises(SpecError) as e:
        parse_spec(SPEC.replace(*edit), "diff.toml")
    for text in expected:
        assert text in str(e.value)


def test_a_base_of_another_architecture_fails_before_any_picture(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(HERE))
    text = SPEC.replace('base = "gallery_model:tiny_gray"', 'base = "helpers:conv_net"').replace("[scan]", "[x]")
    text = text.split("[x]")[0]
    with pytest.raises(VisfeatError, match="same model before the change"):
        build_gallery(parse_spec(text, "diff.toml"), tmp_path / "site", progress=False)
    assert not (tmp_path / "site" / MODEL).exists()  # refused at planning: no work done, no page written


def test_the_diff_stage_draws_with_the_default_image_for_its_steps(tmp_path, monkeypatch):
    """The diff stage's pictures (each model's and the difference) use render's default image for the section's
    steps, as the render stage's do (the low-pass narrows for long runs)."""
    import importlib
    import sys

    render_module = importlib.import_module("visfeat.render")  # the package exports a function of that name
    original, heard = render_module.default_param, []

    def spy(model, objectives=(), steps=None):
        heard.append((sys._getframe(1).f_globals["__name__"], steps))
        return original(model, objectives, steps)

    monkeypatch.setattr(render_module, "default_param", spy)
    monkeypatch.syspath_prepend(str(HERE))
    spec = SPEC.replace("steps = 6", "steps = 2").replace('units = "all"', "units = [0, 1]", 1).split("[scan]")[0]
    build_gallery(parse_spec(spec, "diff.toml"), tmp_path / "site", progress=False)
    from_diff = [steps for caller, steps in heard if caller.endswith("stages.diff")]
    assert from_diff and set(from_diff) == {2}
