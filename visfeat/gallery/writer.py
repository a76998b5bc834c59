"""Writing a site's files: each written atomically and only when its bytes change (a rebuild touches little), and
every file the build wrote remembered, so the ones it did not write (a unit removed from the spec) are removed."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from ..images import atomic_write


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write atomically unless the file already holds these bytes; True when written."""
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)
    return True


class SiteWriter:
    """Writes site files by site-relative path, counting what changed and remembering what it wrote."""

    def __init__(self, out: Path):
        self.out, self.written, self.kept = out, 0, set()

    def bytes(self, rel: str, data: bytes) -> str:
        self.kept.add(rel)
        self.written += write_if_changed(self.out / rel, data)
        return rel

    def text(self, rel: str, text: str) -> str:
        return self.bytes(rel, text.encode())

    def derived(self, rel: str, make: Callable[[], bytes], source: Path | None = None) -> str:
        """A file made from ``source`` (or from what its name encodes): made again only when missing or older
        than its source, so a rebuild does not re-encode every thumbnail and example image."""
        self.kept.add(rel)
        path = self.out / rel
        if path.is_file() and (source is None or path.stat().st_mtime >= source.stat().st_mtime):
            return rel
        self.written += write_if_changed(path, make())
        return rel

    def remove_stale(self, keep: Callable[[str], bool]) -> None:
        """Delete the files this build did not write, except those ``keep`` names (the result store)."""
        for path in sorted(self.out.rglob("*"), reverse=True):
            rel = path.relative_to(self.out).as_posix()
            if keep(rel) or rel in self.kept:
                continue
            if path.is_file():
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                shutil.rmtree(path, ignore_errors=True)
