"""Trust checks, measured: how the path check separates planted fooling circuits from normal units, and what it
says about a built gallery (path similarity by layer, flags, the checks' cost against the build).

    python benchmarks/trust.py                      # planted models only (about 2 minutes on 2 cores)
    python benchmarks/trust.py --site site          # and the distribution over a built gallery (e.g. the demo)

The planted models (tests/planted.py) carry a unit that photos drive through a natural channel and its
visualization through a synthetic grating: every pattern at two depths of a CNN and in a token model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

import planted  # noqa: E402

import visfeat as vf  # noqa: E402
from visfeat.hooks import capture, run  # noqa: E402
from visfeat.path_similarity import THRESHOLD, path_checks  # noqa: E402
from visfeat.units import parse_unit  # noqa: E402


def top(model, unit: str, photos: torch.Tensor, k: int) -> torch.Tensor:
    obj = parse_unit(unit).objective()
    with torch.no_grad(), capture(model.module, obj.layers, logits=model.logits_layer) as acts:
        run(model.module, model.preprocess(photos))
        values = obj(acts)
    return photos[values.topk(k).indices]


def planted_models() -> dict:
    out = {}
    for pattern in planted.PATTERNS:
        for depth in (1, 2):
            out[f"cnn depth {depth}, {pattern}"] = planted.fooled_cnn(pattern, depth=depth)
        out[f"token model, {pattern}"] = planted.fooled_vit(pattern)
    return out


def separation(k: int, preset: str) -> None:
    photos = planted.natural_images(256, seed=1)
    fooled, normal, seconds, n = [], [], 0.0, 0
    print(f"planted fooling circuits: draft pictures ({preset}), top {k} of 256 photos, threshold {THRESHOLD}")
    print(f"{'model':<44} {'unit':<12} {'kind':<7} {'path similarity':>15}  flagged")
    for name, (model, units) in planted_models().items():
        every = units["fooled"] + units["normal"]
        pictures = vf.render(model, every, preset=preset, progress=False).images
        naturals = [top(model, u, photos, k) for u in every]
        t = time.perf_counter()
        checks = path_checks(model, every, pictures, naturals)
        seconds += time.perf_counter() - t
        n += len(every)
        for u, c in zip(every, checks, strict=True):
            kind = "FOOLED" if u in units["fooled"] else "normal"
            (fooled if kind == "FOOLED" else normal).append(c.score)
            print(f"{name:<44} {u:<12} {kind:<7} {c.score:>15.3f}  {'yes' if c.flagged() else 'no'}")
    missed = sum(s >= THRESHOLD for s in fooled)
    false = sum(s < THRESHOLD for s in normal)
    print(
        f"\nfooled units: {len(fooled)}, score max {max(fooled):.3f}, median {statistics.median(fooled):.3f}; "
        f"missed {missed}"
    )
    print(
        f"normal units: {len(normal)}, score min {min(normal):.3f}, median {statistics.median(normal):.3f}; "
        f"false positives {false}"
    )
    print(f"margin: threshold {THRESHOLD} sits between {max(fooled):.3f} and {min(normal):.3f}")
    print(f"cost: {seconds / n * 1000:.1f} ms per unit ({1 + k} images, one forward and backward each; 64 px)")


def site_report(site: Path) -> None:
    manifest = json.loads((site / "manifest.json").read_text())
    print(f"\n{site}: {manifest['title']}")
    print(
        f"{'section':<16} {'units':>5} {'checked':>7} {'min':>6} {'median':>6} {'max':>6} {'flagged':>7}  other flags"
    )
    total = flagged = 0
    for sec in manifest["sections"]:
        scores = [u["path_similarity"] for u in sec["units"] if u.get("path_similarity") is not None]
        paths = sum("different-path" in u.get("flags", []) for u in sec["units"])
        other: dict[str, int] = {}
        for u in sec["units"]:
            for f in u.get("flags", []):
                if f != "different-path":
                    other[f] = other.get(f, 0) + 1
        total += len(sec["units"])
        flagged += paths
        stats = f"{min(scores):>6.2f} {statistics.median(scores):>6.2f} {max(scores):>6.2f}" if scores else f"{'–':>20}"
        print(f"{sec['name']:<16} {len(sec['units']):>5} {len(scores):>7} {stats} {paths:>7}  {other or ''}")
    print(f"different-path: {flagged} of {total} units")
    cache = site / ".visfeat-cache"
    seconds: dict[str, float] = {}
    for done in cache.glob("*/*/done.json"):
        seconds[done.parts[-3]] = seconds.get(done.parts[-3], 0.0) + json.loads(done.read_text()).get("seconds", 0.0)
    if seconds:
        rest = sum(v for k, v in seconds.items() if k != "paths")
        print(
            "stage seconds (as stored): "
            + ", ".join(f"{k} {v:.1f}" for k, v in sorted(seconds.items()))
            + f"; the path check adds {100 * seconds.get('paths', 0.0) / max(rest, 1e-9):.1f}% to the rest"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--site", type=Path, help="a built gallery to report on")
    ap.add_argument("--k", type=int, default=8, help="top examples per unit (the demo's k)")
    ap.add_argument("--preset", default="draft")
    ap.add_argument("--no-planted", action="store_true", help="only the site report")
    args = ap.parse_args()
    if not args.no_planted:
        separation(args.k, args.preset)
    if args.site:
        site_report(args.site)


if __name__ == "__main__":
    main()
