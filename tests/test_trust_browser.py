"""The trust panel in a real browser, on a gallery of a planted fooling circuit (tests/planted.py): the fooled
unit's page warns in one line at its top, its trust panel shows the path check, the grid filters flagged units;
a normal unit's page carries no warning. ``VISFEAT_SCREENSHOTS=docs/img`` also writes the docs' two pictures
(``trust_flagged.png``, ``trust_ok.png``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import planted
import pytest
from test_gallery_browser import HERE, browser, check_page, page, url  # noqa: F401 (fixtures)

from visfeat.gallery import build_gallery, parse_spec
from visfeat.path_similarity import THRESHOLD

MODEL = "fooled-cnn-1"


@pytest.fixture(scope="module")
def planted_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("planted-site")
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(HERE))
        build_gallery(parse_spec(planted.GALLERY_SPEC, "planted.toml"), out, progress=False)
    return out


def _units(site: Path) -> dict[str, dict]:
    manifest = json.loads((site / "manifest.json").read_text())
    return {u["unit"]: u for s in manifest["sections"] for u in s["units"]}


def test_manifest_flags_the_fooled_unit_and_not_the_normal_ones(planted_site: Path) -> None:
    units = _units(planted_site)
    fooled = units[f"act2:{planted.FOOLED}"]
    assert "different-path" in fooled["flags"] and fooled["path_similarity"] < THRESHOLD
    for i in (0, 1, 2, 4):
        normal = units[f"act2:{i}"]
        assert "different-path" not in normal["flags"] and normal["path_similarity"] > THRESHOLD, normal
    assert "different-path" in units[f"logit:{planted.FOOLED_CLASS}"]["flags"]


def test_warning_panel_and_grid_filter(planted_site: Path, page) -> None:  # noqa: F811
    page.goto(url(planted_site, f"{MODEL}/act2/{planted.FOOLED}.html"))
    check_page(page)
    warning = page.locator("p.warning")
    assert warning.count() == 1 and "Do not trust this picture" in warning.inner_text()
    assert page.locator("#path.flag").count() == 1
    page.locator("details.pathcheck summary").click()
    assert page.locator("details.pathcheck td code").first.inner_text() == "act1"
    units = [u for u in _units(planted_site).values() if u["unit"].startswith("act2:")]
    trusted = [u for u in units if not u["flags"]]
    assert trusted, units
    page.goto(url(planted_site, f"{MODEL}/act2/{trusted[0]['index']}.html"))
    check_page(page)
    assert page.locator("p.warning").count() == 0
    assert page.locator("#path.ok").count() == 1

    page.goto(url(planted_site, f"{MODEL}/act2/index.html"))
    page.wait_for_selector("#grid a.cell")
    assert page.locator("#count").inner_text() == "5 of 5 units"
    page.check("#flagged")
    flagged = sorted(f"{u['index']}.html" for u in units if u["flags"])
    shown = page.eval_on_selector_all("#grid a.cell", "els => els.map(e => e.getAttribute('href'))")
    assert sorted(shown) == flagged and f"{planted.FOOLED}.html" in shown
    assert page.locator("#count").inner_text() == f"{len(flagged)} of 5 units"
    page.uncheck("#flagged")
    page.select_option("#sort", "path")
    shown = page.eval_on_selector_all("#grid a.cell", "els => els.map(e => e.getAttribute('href'))")
    assert shown[-1] == f"{planted.FOOLED}.html"  # highest path similarity first: the fooled unit last
    check_page(page)


def test_screenshots_of_a_flagged_and_a_trusted_unit(planted_site: Path, browser, tmp_path) -> None:  # noqa: F811
    shots = Path(os.environ.get("VISFEAT_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    p = context.new_page()
    from test_gallery_browser import Watch

    p.watch = Watch(p)
    trusted = next(
        u["index"] for u in _units(planted_site).values() if u["unit"].startswith("act2:") and not u["flags"]
    )
    for name, unit in (("trust_flagged.png", planted.FOOLED), ("trust_ok.png", trusted)):
        p.goto(url(planted_site, f"{MODEL}/act2/{unit}.html"))
        check_page(p)
        p.evaluate("document.querySelectorAll('details').forEach(d => d.open = true); scrollTo(0, 0)")
        p.screenshot(path=str(shots / name), full_page=True)
        assert (shots / name).stat().st_size > 10_000
    context.close()
