"""Gallery builds on Ray (``--ray``): worker actors on a local cluster inside a private network namespace with
only loopback. A worker SIGKILLed mid-build has its job retried on another worker, a killed driver resumes
from disk, and either way the site is byte-identical to a single-process build of the same spec."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from gallery_model import site_files, spec_text

from visfeat.gallery import build_gallery

TESTS = Path(__file__).parent
TOTAL_UNITS = 8 + 6 + 3 + 6 + 6  # the spec's layers 1, 3, 5, logits and SAE latents


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The spec and its single-process build (one torch thread per job, as the Ray workers use)."""
    tmp = tmp_path_factory.mktemp("ray")
    spec = tmp / "spec.toml"
    spec.write_text(spec_text(steps=40))
    sys.path.insert(0, str(TESTS))
    try:
        build_gallery(spec, tmp / "single", threads=1, progress=False)
    finally:
        sys.path.remove(str(TESTS))
    return spec, site_files(tmp / "single")


def _scenario(name: str, spec: Path, site: Path) -> dict:
    """Run ``ray_scenarios.py NAME`` in a new network namespace that has only loopback (needs root, as CI has)."""
    netns = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"']
    cmd = netns + [sys.executable, str(TESTS / "ray_scenarios.py"), name, str(spec), str(site)]
    env = {**os.environ, "PYTHONPATH": str(TESTS), "RAY_USAGE_STATS_ENABLED": "0"}
    run = subprocess.run(cmd, cwd=TESTS, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def _assert_loopback_only(addresses: list[str]) -> None:
    assert addresses, "no Ray process listened"
    assert all(a.startswith(("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:")) for a in addresses), addresses


def _assert_same_site(site: Path, reference: dict[str, bytes]) -> None:
    files = site_files(site)
    assert files.keys() == reference.keys()
    assert [k for k in files if files[k] != reference[k]] == []  # same pages, same PNG bytes
    assert not [p for p in site.rglob(".*") if p.is_file()]  # no temporary file left behind


def test_a_worker_killed_mid_build_is_replaced_and_the_site_equals_a_single_process_build(reference, tmp_path):
    spec, single = reference
    result = _scenario("kill-worker", spec, tmp_path / "site")
    _assert_loopback_only(result["listening"])
    _assert_loopback_only(result["killed"]["listening"])  # the workers, too, mid-build
    assert result["workers"] == 2
    assert result["killed"]["pid"] and result["retried"] >= 1  # a job really was lost with its worker
    _assert_same_site(tmp_path / "site", single)


def test_a_killed_driver_is_restarted_and_resumes_from_disk(reference, tmp_path):
    spec, single = reference
    result = _scenario("kill-driver", spec, tmp_path / "site")
    _assert_loopback_only(result["listening"])
    out = result["second"]
    rendered = int(out.split("units rendered ")[1].split(",")[0])
    reused = int(out.split("reused ")[1].split()[0])
    assert result["renders_at_kill"] >= 3 and reused > 0  # the restart kept what the killed driver finished
    assert rendered + reused == TOTAL_UNITS and rendered > 0
    _assert_same_site(tmp_path / "site", single)


def test_without_ray_installed_the_error_says_how_to_install_it(monkeypatch):
    from visfeat.errors import VisfeatError
    from visfeat.gallery.executors import RayPool

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(VisfeatError, match=r"pip install 'visfeat\[ray\]'"):
        RayPool(None, Path("site"), "0" * 16)


def test_a_worker_with_other_weights_than_the_driver_refuses_to_start(reference, tmp_path, monkeypatch):
    from visfeat.errors import VisfeatError
    from visfeat.gallery import load_spec
    from visfeat.gallery.executors import GalleryWorker

    monkeypatch.syspath_prepend(str(TESTS))
    spec = load_spec(reference[0])
    with pytest.raises(VisfeatError, match="different weights.*shared storage"):
        GalleryWorker(spec, str(tmp_path), "cpu", 1, "0" * 16)  # the fingerprint a driver with other weights sent


def test_bad_worker_and_thread_counts_are_refused_before_any_work(reference, tmp_path, capsys):
    from visfeat.cli import main

    for flag in ("--workers", "--threads"):
        assert main(["gallery", "build", str(reference[0]), "-o", str(tmp_path / "site"), flag, "0"]) != 0
        assert f"{flag} must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "site").exists()
