"""The gallery in a real browser: Debian's Chromium through Playwright, pages opened from ``file://``.

A small site of ``gallery_model:tiny_gray`` (one grayscale input channel, a class label that is an XSS string) is
built once; the tests walk it as a user does, by clicking, and on every page check that each image loads, that no
console error, page error, dialog or failed request happened, and that nothing was fetched but ``file:`` and
``data:`` URLs. Chromium is required (CI installs it): without it these tests fail, they do not skip.

``test_screenshots_of_index_layer_and_unit_pages`` also takes the docs' pictures when ``VISFEAT_SITE`` names a
built demo site and ``VISFEAT_SCREENSHOTS`` a folder (see its docstring).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin

import pytest
from gallery_model import spec_text

from visfeat.gallery import build_gallery, parse_spec

CHROMIUM = Path("/usr/bin/chromium")
HERE = Path(__file__).parent
XSS = "<img src=x onerror=alert(1)>"  # class 0 of gallery_model.tiny_gray
MODEL_DIR = "tiny_gray"
VIEWPORT = {"width": 1400, "height": 900}


# Scroll the page down a half screen at a time (lazy images start loading) and end at the bottom.
_SCROLL_THROUGH = """async () => {
  const frame = () => new Promise(r => requestAnimationFrame(() => r()));
  for (let y = 0; y < document.documentElement.scrollHeight; y += innerHeight / 2) { scrollTo(0, y); await frame(); }
  scrollTo(0, document.documentElement.scrollHeight);
  await frame();
}"""

# SVG <image> elements (the circuit diagram) have no naturalWidth: load each href as an Image and decode it.
_SVG_IMAGES = """async () => Promise.all([...document.querySelectorAll("svg image")].map(async el => {
  const img = new Image();
  img.src = new URL(el.getAttribute("href"), document.baseURI).href;
  try { await img.decode(); return [el.getAttribute("href"), img.naturalWidth]; }
  catch (e) { return [el.getAttribute("href"), 0]; }
}))"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small site, built once for the module (``gallery_model`` imported from tests/)."""
    out = tmp_path_factory.mktemp("gallery-site")
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(HERE))
        build_gallery(parse_spec(spec_text(), "browser.toml"), out, progress=False)
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Chromium, headless; a missing Chromium or Playwright fails the tests (they are what is under test)."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} not found: the gallery browser tests need Chromium: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the gallery browser tests need Playwright: pip install -e '.[dev]' (or pip install playwright)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


class Watch:
    """Everything a page reported that a clean page does not, each with the page it happened on: console errors,
    page errors, dialogs, failed requests and requests for anything but ``file:`` and ``data:`` URLs."""

    def __init__(self, page) -> None:
        self.page, self.problems = page, []
        page.on("console", lambda m: self.add(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.add(f"page error: {e}"))
        page.on("dialog", self._dialog)
        page.on("request", self._request)
        page.on("requestfailed", lambda r: self.add(f"request failed: {r.url} ({r.failure})"))

    def add(self, problem: str) -> None:
        self.problems.append(f"{problem} [on {self.page.url}]")

    def _dialog(self, dialog) -> None:
        self.add(f"dialog {dialog.type}: {dialog.message}")
        dialog.dismiss()

    def _request(self, request) -> None:
        if not request.url.startswith(("file:", "data:")):
            self.add(f"network request: {request.url}")


@pytest.fixture
def page(browser) -> Iterator[object]:
    """A fresh page at 1400x900 with a :class:`Watch` attached as ``page.watch``."""
    context = browser.new_context(viewport=VIEWPORT)
    p = context.new_page()
    p.watch = Watch(p)
    yield p
    context.close()


def url(site: Path, rel: str) -> str:
    """The ``file://`` URL of a site page."""
    return (site / rel).as_uri()


def check_page(page, min_images: int = 1) -> int:
    """Scroll through the page, wait for every image (lazy ones included), and check that each decoded, that no
    ``<img src="x">`` exists and that the page reported nothing; returns the number of images."""
    page.wait_for_load_state("load")
    page.evaluate(_SCROLL_THROUGH)
    page.wait_for_function("[...document.images].every(i => i.complete)", timeout=15_000)
    images = page.evaluate("[...document.images].map(i => [i.getAttribute('src').slice(0, 80), i.naturalWidth])")
    broken = [src for src, width in images if not width > 0]
    assert not broken, f"{page.url}: images that did not load: {broken}"
    svg = page.evaluate(_SVG_IMAGES)
    assert all(width > 0 for _, width in svg), f"{page.url}: SVG images that did not load: {svg}"
    assert len(images) + len(svg) >= min_images, f"{page.url}: expected at least {min_images} images"
    assert page.locator('img[src="x"]').count() == 0, f"{page.url}: a label was inserted as HTML"
    assert not page.watch.problems, f"{page.url}: {page.watch.problems}"
    return len(images) + len(svg)


def click_to(page, selector: str, expected: str) -> None:
    """Click the first element matching ``selector`` and wait until the page is ``expected`` (a URL)."""
    page.locator(selector).first.click()
    page.wait_for_url(expected)
    assert page.url == expected


def test_walk_index_to_upstream_unit_and_back(site: Path, page) -> None:
    page.goto(url(site, "index.html"))
    assert page.title().startswith("custom <b>model</b>")
    assert page.locator("h1").inner_text() == "custom <b>model</b>"  # the spec's title is text, not markup
    assert page.locator("h1 b").count() == 0
    check_page(page, min_images=0)

    click_to(page, "a.card.model", url(site, f"{MODEL_DIR}/index.html"))
    check_page(page, min_images=29)

    click_to(page, 'section.layer-sample h2 a[href="3/index.html"]', url(site, f"{MODEL_DIR}/3/index.html"))
    page.wait_for_selector("#grid a.cell")  # built by gallery.js from units.js
    assert page.locator("#grid a.cell").count() == 6
    check_page(page, min_images=6)

    click_to(page, '#grid a.cell[href="2.html"]', url(site, f"{MODEL_DIR}/3/2.html"))
    unit_page = page.url
    assert page.locator("h1").inner_text().startswith("3:2")
    check_page(page, min_images=10)

    target = urljoin(page.url, page.locator("section.built a.nb").first.get_attribute("href"))
    assert re.fullmatch(re.escape(url(site, f"{MODEL_DIR}/1")) + r"/\d\.html", target), target  # the layer before
    click_to(page, "section.built a.nb", target)
    assert page.locator("h1").inner_text().startswith("1:")
    check_page(page, min_images=10)

    page.go_back()
    page.wait_for_url(unit_page)
    assert page.url == unit_page
    check_page(page, min_images=10)


def test_xss_label_is_text(site: Path, page) -> None:
    page.goto(url(site, f"{MODEL_DIR}/logits/0.html"))
    check_page(page)
    assert XSS in page.locator("h1").inner_text()
    assert page.get_by_text(XSS, exact=True).first.is_visible()
    assert page.locator('img[src="x"]').count() == 0
    page.goto(url(site, f"{MODEL_DIR}/logits/index.html"))  # the grid inserts labels from units.js
    page.wait_for_selector("#grid a.cell")
    check_page(page, min_images=6)
    assert XSS in page.locator('#grid a.cell[href="0.html"]').inner_text()
    assert page.locator("#grid img").count() == 6


_IN_ORDER = "labels => labels.every((l, i) => i === 0 || labels[i - 1].localeCompare(l) <= 0)"


def _cells(page) -> list[str]:
    """The grid's cells in order, as their links."""
    return page.eval_on_selector_all("#grid a.cell", "els => els.map(e => e.getAttribute('href'))")


def _matching(units: list[dict], query: str) -> list[str]:
    """The manifest's units that a filter for ``query`` keeps (its id, name or label contains it), as links."""
    q = query.lower()
    return [f"{u['index']}.html" for u in units if q in f"{u['index']} {u['name']} {u['label']}".lower()]


def test_grid_filter_sort_and_pager(site: Path, page) -> None:
    manifest = json.loads((site / "manifest.json").read_text())
    units = {s["name"]: s["units"] for s in manifest["sections"]}
    page.goto(url(site, f"{MODEL_DIR}/logits/index.html"))
    page.wait_for_selector("#grid a.cell")
    assert page.locator("#count").inner_text() == "6 of 6 units"
    assert _cells(page) == [f"{i}.html" for i in range(6)]
    for query in ("stripes", "S", "4", "& amp", "<img", "nothing matches this"):  # a label, an id, markup
        expected = _matching(units["logits"], query)
        page.fill("#filter", query)
        assert page.locator("#count").inner_text() == f"{len(expected)} of 6 units", query
        assert _cells(page) == expected, query
    page.fill("#filter", "")
    assert page.locator("#count").inner_text() == "6 of 6 units"

    page.select_option("#sort", "held_out")
    by_held_out = sorted(units["logits"], key=lambda u: -u["held_out"])
    assert _cells(page) == [f"{u['index']}.html" for u in by_held_out]
    assert _cells(page) != [f"{i}.html" for i in range(6)]  # the order changed
    page.select_option("#sort", "index")
    assert _cells(page) == [f"{i}.html" for i in range(6)]

    page.goto(url(site, f"{MODEL_DIR}/5/index.html"))  # labels from the weights to the classes
    page.wait_for_selector("#grid a.cell")
    page.select_option("#sort", "label")
    label_of = {f"{u['index']}.html": u["label"] for u in units["5"]}
    labels = [label_of[href] for href in _cells(page)]
    assert sorted(labels) == sorted(u["label"] for u in units["5"])
    assert page.evaluate(_IN_ORDER, labels), labels

    page.goto(url(site, f"{MODEL_DIR}/1/index.html"))  # a unit id: "1:3" names one unit of layer 1
    page.wait_for_selector("#grid a.cell")
    page.fill("#filter", "1:3")
    assert page.locator("#count").inner_text() == "1 of 8 units"
    assert _cells(page) == _matching(units["1"], "1:3") == ["3.html"]

    # prev / next follow the spec's units (5: 0, 3, 7), by link and by arrow key
    page.goto(url(site, f"{MODEL_DIR}/5/0.html"))
    assert page.locator("#prev").count() == 0
    click_to(page, "#next", url(site, f"{MODEL_DIR}/5/3.html"))
    click_to(page, "#next", url(site, f"{MODEL_DIR}/5/7.html"))
    assert page.locator("#next").count() == 0
    click_to(page, "#prev", url(site, f"{MODEL_DIR}/5/3.html"))
    page.keyboard.press("ArrowLeft")
    page.wait_for_url(url(site, f"{MODEL_DIR}/5/0.html"))
    check_page(page)


def test_circuit_page_from_unit_page(site: Path, page) -> None:
    page.goto(url(site, f"{MODEL_DIR}/5/3.html"))
    check_page(page)
    click_to(page, "a.circuit-link", url(site, f"{MODEL_DIR}/circuits/5-3.html"))
    assert check_page(page, min_images=3) >= 3
    assert page.locator(".circuit svg image").count() >= 3  # the target and its contributors
    nodes = page.eval_on_selector_all(".circuit svg a", "els => els.map(e => e.getAttribute('href'))")
    assert nodes, "circuit nodes with a gallery page link to it"
    page_dir = site / MODEL_DIR / "circuits"
    missing = [h for h in nodes if not (page_dir / h).resolve().is_file()]
    assert not missing, f"circuit node links to missing pages: {missing}"


def test_screenshots_of_index_layer_and_unit_pages(browser, site, tmp_path) -> None:
    """Full-page PNGs at 1400 px wide of the index, a layer grid and a unit page, after the same checks as the walk.

    By default of the small site into a temporary folder. The docs' pictures come from the demo site:
    ``VISFEAT_SITE=site VISFEAT_SCREENSHOTS=docs/img pytest tests/test_gallery_browser.py -k screenshots`` writes
    ``gallery_index.png``, ``gallery_layer.png`` (``efficientnet_lite0/blocks.0/index.html``) and ``gallery_unit.png``
    (``efficientnet_lite0/logits/817.html``, the sports car)."""
    from PIL import Image

    demo = os.environ.get("VISFEAT_SITE")
    root = Path(demo).resolve() if demo else site  # a file URL needs an absolute path
    shots = Path(os.environ.get("VISFEAT_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    model = "efficientnet_lite0" if demo else MODEL_DIR
    pages = {
        "gallery_index.png": "index.html",
        "gallery_layer.png": f"{model}/{'blocks.0' if demo else '1'}/index.html",
        "gallery_unit.png": f"{model}/logits/{'817' if demo else '1'}.html",
    }
    context = browser.new_context(viewport=VIEWPORT)
    p = context.new_page()
    p.watch = Watch(p)
    for name, rel in pages.items():
        assert (root / rel).is_file(), f"{root / rel} does not exist: is VISFEAT_SITE a built demo site?"
        p.goto(url(root, rel))
        check_page(p, min_images=1)
        p.evaluate("scrollTo(0, 0)")
        p.screenshot(path=str(shots / name), full_page=True)
        with Image.open(shots / name) as im:
            assert im.width == VIEWPORT["width"] and im.height >= VIEWPORT["height"] // 2
    context.close()
