"""Fetch weight files with a cache, atomic writes and an offline error that names the fix."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import OfflineError


def cache_dir() -> Path:
    """Where downloads are kept: ``$VISFEAT_CACHE`` or ``~/.cache/visfeat``."""
    return Path(os.environ.get("VISFEAT_CACHE", Path.home() / ".cache" / "visfeat"))


def fetch(url: str, filename: str | None = None, arg_hint: str = "weights", timeout: float = 30) -> Path:
    """Return a local copy of ``url``, downloading it once into the cache.

    ``file://`` URLs are read directly. A failed download raises :class:`OfflineError` saying
    how to pass the file instead (``arg_hint`` names the argument that takes a local path).
    """
    if url.startswith("file://"):
        path = Path(urllib.request.url2pathname(url[len("file://") :]))
        if not path.is_file():
            raise OfflineError(f"{url}: no such file")
        return path
    name = filename or (hashlib.sha1(url.encode()).hexdigest()[:10] + "-" + url.rstrip("/").rsplit("/", 1)[-1])
    dest = cache_dir() / name
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as r:
            shutil.copyfileobj(r, f)
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        Path(tmp).unlink(missing_ok=True)
        raise OfflineError(
            f"could not download {url} ({e}). If this machine is offline, download the file elsewhere "
            f"and pass it as {arg_hint}='path/to/{url.rsplit('/', 1)[-1]}'"
        ) from e
    return dest
