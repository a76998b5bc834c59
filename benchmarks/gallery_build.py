"""Gallery build and browsing speed: a spec from scratch, a no-change rebuild, and a 1,000-unit layer grid in Chromium.

    python benchmarks/gallery_build.py --spec gallery/demo.toml --out /tmp/demo-site [--keep] [--skip-demo]

(a) builds ``--spec`` into ``--out`` from scratch (the folder is deleted first unless ``--keep``) and prints the
wall time per stage (``BuildReport.seconds``), the units rendered and units per second of the render stage and of
the whole build; (b) rebuilds with nothing changed (the whole call, model load included) and checks that no job ran;
(c) builds a site of one 1,000-channel layer of a tiny model defined here (1 render step, no diverse images), opens
its grid page from ``file://`` in Chromium at 1400x900 and prints the load time (navigation start to first paint
and to the load event), the thumbnails requested by first paint, by the load event and after scrolling to the
bottom (only the visible ones should load first), and the time to filter the grid. ``--skip-demo`` runs (c) only.
Chromium: Debian's ``/usr/bin/chromium`` (``apt-get install -y chromium``) through the ``playwright`` package.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import visfeat as vf
from visfeat.gallery import BuildReport, build_gallery, parse_spec
from visfeat.gallery.store import CACHE

CHROMIUM = "/usr/bin/chromium"
WIDE = 1000  # channels of the wide layer
VIEWPORT = {"width": 1400, "height": 900}

WIDE_SPEC = f"""
title = "{WIDE}-unit layer"
model = "wide_conv"
[images]
n = 16
k = 2
[render]
steps = 1
batch_size = 125
diverse = 0
[[layers]]
name = "1"
units = "all"
"""


def wide_conv() -> vf.Model:
    """conv(3->1000, stride 2) "0", ReLU "1", pool, 10 classes: one layer of 1,000 channels at 32 px."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, WIDE, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(WIDE, 10),
    )
    return vf.Model(net, vf.InputSpec(size=(32, 32)), name="wide_conv")


def print_report(title: str, report: BuildReport, wall: float) -> None:
    """Seconds per stage, units rendered and units per second (render stage and whole build)."""
    print(f"{title}: {wall:.1f} s wall")
    for stage, s in report.seconds.items():
        print(f"  {stage:<10} {s:8.2f} s  ({report.ran.get(stage, 0)} jobs run, {report.reused.get(stage, 0)} reused)")
    render_s = report.seconds.get("render", 0.0)
    per_render = report.units_rendered / render_s if render_s > 0 else float("nan")
    print(
        f"  units rendered {report.units_rendered} (reused {report.units_reused}): {per_render:.2f} units/s in the "
        f"render stage, {report.units_rendered / wall:.2f} units/s overall; {report.files_written} files written"
    )


def clear(folder: Path) -> None:
    """Delete a previous site folder; refuse a non-empty folder that is not a gallery site (no result store)."""
    if not folder.exists():
        return
    if any(folder.iterdir()) and not (folder / CACHE).is_dir():
        raise SystemExit(f"{folder} is not a gallery site (no {CACHE}/ inside): not deleting it; pick another folder")
    shutil.rmtree(folder)


def demo(spec: str, out: Path, keep: bool) -> None:
    """(a) a build from scratch, (b) a rebuild with nothing changed."""
    if not keep:
        clear(out)
    t = time.perf_counter()
    report = build_gallery(spec, out, progress=False)
    how = " (kept)" if keep else " from scratch"
    print_report(f"(a) build {spec} -> {out}{how}", report, time.perf_counter() - t)
    t = time.perf_counter()
    again = build_gallery(spec, out, progress=False)
    wall = time.perf_counter() - t
    ran = sum(again.ran.values())
    print(
        f"(b) no-change rebuild: {wall:.1f} s (whole call, model load included), {ran} jobs run, "
        f"{again.files_written} files rewritten, writing {again.seconds.get('writing', 0.0):.2f} s"
    )
    if ran:
        print(f"    warning: a rebuild with nothing changed ran jobs: {again.ran}")


# Injected before the page's own scripts: the time of the first frame after the grid is built (gallery.js runs
# before DOMContentLoaded), as navigation-relative milliseconds.
_GRID_FRAME = """
document.addEventListener("DOMContentLoaded", function () {
  requestAnimationFrame(function () { window.__vfGridFrame = performance.now(); });
});
"""

_TIMES = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const paint = Object.fromEntries(performance.getEntriesByType("paint").map(e => [e.name, e.startTime]));
  return {origin: performance.timeOrigin, load: nav.loadEventEnd, dcl: nav.domContentLoadedEventEnd,
          fp: paint["first-paint"] ?? paint["first-contentful-paint"], fcp: paint["first-contentful-paint"],
          grid: window.__vfGridFrame, cells: document.querySelectorAll("#grid .cell").length,
          visible: [...document.querySelectorAll("#grid .cell img")].filter(i => {
            const r = i.getBoundingClientRect();
            return r.bottom > 0 && r.top < innerHeight;
          }).length};
}"""

_FILTER = """(q) => {
  const f = document.getElementById("filter");
  const t0 = performance.now();
  f.value = q;
  f.dispatchEvent(new Event("input"));
  const sync = performance.now() - t0;
  return new Promise(done => requestAnimationFrame(() => requestAnimationFrame(() =>
    done({sync, painted: performance.now() - t0, count: document.getElementById("count").textContent,
          cells: document.querySelectorAll("#grid .cell").length}))));
}"""


def grid_timing(site: Path, units: int) -> None:
    """(c, browser) open the layer grid from disk in Chromium; load times and image requests vs units."""
    from playwright.sync_api import sync_playwright

    page_file = site / "wide_conv" / "1" / "index.html"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport=VIEWPORT)
        images: list = []  # file:// is not in the page's resource timing: Playwright's request timing is
        page.on("request", lambda r: images.append(r) if r.resource_type == "image" else None)
        page.add_init_script(_GRID_FRAME)
        page.goto(page_file.as_uri(), wait_until="load")
        page.wait_for_timeout(500)
        t = page.evaluate(_TIMES)
        starts = [r.timing["startTime"] - t["origin"] for r in images]

        def by(ms: float) -> int:
            return sum(s <= ms for s in starts)

        print(f"(c) {page_file} in Chromium at {VIEWPORT['width']}x{VIEWPORT['height']}: {t['cells']} cells")
        print(
            f"  navigation start -> first paint {t['fp']:.0f} ms (first contentful {t['fcp']:.0f} ms), "
            f"DOMContentLoaded {t['dcl']:.0f} ms, load event {t['load']:.0f} ms, "
            f"first frame after the grid is built {t['grid']:.0f} ms"
        )
        print(
            f"  thumbnail requests started (of {units} units): {by(t['fp'])} by the first paint, "
            f"{by(t['dcl'])} by DOMContentLoaded (the grid exists), {by(t['load'])} by the load event, "
            f"{len(images)} 0.5 s after it; {t['visible']} thumbnails are in the viewport (the rest of the requests: "
            "Chromium's lazy-loading margin below it)"
        )
        page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        page.wait_for_timeout(800)
        print(f"  after scrolling to the bottom: {len(images)} thumbnails requested")
        for q in ("12", "999", ""):
            r = page.evaluate(_FILTER, q)
            print(
                f"  filter {q!r:6}: {r['sync']:.1f} ms to rebuild the grid, {r['painted']:.1f} ms to the next paint -> "
                f"{r['count']!r} ({r['cells']} cells)"
            )
        browser.close()


def wide_layer(out: Path | None) -> None:
    """(c) build the 1,000-unit site and time its grid page."""
    folder = out if out is not None else Path(tempfile.mkdtemp(prefix="vf-wide-"))
    clear(folder)
    spec = parse_spec(WIDE_SPEC, "wide.toml")
    t = time.perf_counter()
    report = build_gallery(spec, folder, progress=False, model=wide_conv())
    print_report(f"(c) build a {WIDE}-unit layer -> {folder}", report, time.perf_counter() - t)
    grid_timing(folder, WIDE)
    if out is None:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default="gallery/demo.toml")
    ap.add_argument("--out", type=Path, default=Path("/tmp/visfeat-gallery-bench"), help="site folder of (a), (b)")
    ap.add_argument("--keep", action="store_true", help="do not delete --out first (a partial or finished build)")
    ap.add_argument("--skip-demo", action="store_true", help="run only (c), the 1,000-unit layer in Chromium")
    ap.add_argument("--wide-out", type=Path, default=None, help="site folder of (c) (default: a temporary one)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args()
    vf.cpu.tune_allocator()  # as the `visfeat` command does for its own process
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.skip_demo:
        demo(args.spec, args.out, args.keep)
    wide_layer(args.wide_out)


if __name__ == "__main__":
    main()
