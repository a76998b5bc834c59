"""Ray build scenarios for ``test_gallery_ray.py``, run inside a private network namespace with only loopback
(``unshare -n``, ``ip link set lo up``), so no Ray process can reach or be reached from another address.

    python ray_scenarios.py kill-worker SPEC SITE   # a local cluster; SIGKILL a busy worker mid-build
    python ray_scenarios.py kill-driver SPEC SITE   # `ray start --head`; SIGKILL the driver, start it again

Each prints one JSON line: what listened (checked to be loopback before any work), what was killed, the report.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ.setdefault("RAY_AUTH_MODE", "token")  # `ray start` made a token; the driver must send it
LOOPBACK = ("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:")
PORT = "6379"


def listening() -> list[str]:
    """Local addresses of every listening TCP socket in this network namespace."""
    rows = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout.splitlines()
    return [row.split()[3] for row in rows if row.strip()]


def check_loopback() -> list[str]:
    addrs = listening()
    wrong = [a for a in addrs if not a.startswith(LOOPBACK)]
    if wrong or not addrs:
        sys.exit(f"not loopback only: {addrs}")
    return addrs


def done_renders(site: Path) -> int:
    return len(list((site / ".visfeat-cache" / "render").glob("*/done.json")))


def busy_worker() -> int | None:
    """The pid of a Ray worker actor that is running a job (Ray titles it ``ray::GalleryWorker.run``)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        if args.startswith("ray::GalleryWorker.run"):
            return int(pid)
    return None


def wait_for(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    return None


def kill_worker(spec: Path, site: Path) -> dict:
    import ray

    from visfeat.gallery import build_gallery

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    before = check_loopback()  # before any work
    killed: dict = {}

    def killer() -> None:
        if wait_for(lambda: done_renders(site) >= 2, 300):
            pid = wait_for(busy_worker, 60)
            if pid:
                killed.update(pid=pid, renders_done=done_renders(site), listening=check_loopback())
                os.kill(pid, signal.SIGKILL)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        report = build_gallery(spec, site, threads=1, ray=True, progress=False)
    finally:
        ray.shutdown()
    thread.join(5)
    return {"listening": before, "killed": killed, "retried": report.retried, "workers": report.workers}


def kill_driver(spec: Path, site: Path) -> dict:
    ray = [str(Path(sys.executable).with_name("ray"))]
    head = ["start", "--head", "--port", PORT, "--node-ip-address", "127.0.0.1", "--num-cpus", "2"]
    subprocess.run(ray + head + ["--include-dashboard", "false", "--disable-usage-stats"], check=True)
    try:
        before = check_loopback()  # before any work
        build = [sys.executable, "-m", "visfeat.cli", "gallery", "build", str(spec), "-o", str(site)]
        build += ["--ray", f"127.0.0.1:{PORT}", "--threads", "1", "--no-progress"]
        first = subprocess.Popen(build, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: done_renders(site) >= 3 or first.poll() is not None, 300)
        first.send_signal(signal.SIGKILL)
        first.wait()
        at_kill = done_renders(site)
        second = subprocess.run(build, capture_output=True, text=True, timeout=300)
        if second.returncode:
            sys.exit(second.stderr)
        return {"listening": before, "renders_at_kill": at_kill, "second": second.stdout}
    finally:
        subprocess.run(ray + ["stop", "--force"], capture_output=True)


if __name__ == "__main__":
    scenario, spec, site = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    result = {"kill-worker": kill_worker, "kill-driver": kill_driver}[scenario](spec, site)
    print(json.dumps(result))
