"""The result store: every job's outputs in a folder named by the hash of its recipe, written atomically.

A job writes its files into ``ROOT/KIND/KEY/`` and then ``done.json`` (its small result record) last, by
rename: a folder without ``done.json`` is an unfinished job and is simply redone, so a killed build loses
no finished job and leaves no half-written file. Writing a job twice is harmless.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..images import atomic_write

DONE = "done.json"
CACHE = ".visfeat-cache"  # the store's folder inside a site


def recipe_key(recipe: dict) -> str:
    """A short stable hash of a JSON-able recipe (sorted keys)."""
    blob = json.dumps(recipe, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Store:
    """Job outputs by ``(kind, key)`` under ``root``."""

    root: Path

    def folder(self, kind: str, key: str) -> Path:
        """The job's folder (created)."""
        path = self.root / kind / key
        path.mkdir(parents=True, exist_ok=True)
        return path

    def done(self, kind: str, key: str) -> bool:
        return (self.root / kind / key / DONE).is_file()

    def finish(self, kind: str, key: str, record: dict) -> None:
        """Mark the job finished with its record (after all of its files are written)."""
        atomic_write(self.folder(kind, key) / DONE, json.dumps(record, indent=1, default=str).encode())

    def record(self, kind: str, key: str) -> dict:
        return json.loads((self.root / kind / key / DONE).read_text())

    def file(self, kind: str, key: str, name: str) -> Path:
        return self.root / kind / key / name

    def relative(self, kind: str, key: str, name: str) -> str:
        """A stored file's path from the folder holding the store (the site), for commands a page prints."""
        return f"{self.root.name}/{kind}/{key}/{name}"

    def sweep(self) -> int:
        """Delete temporary files that a killed build left mid-write (``.NAME.*`` beside their target)."""
        stale = [p for p in self.root.rglob(".*") if p.is_file()] if self.root.is_dir() else []
        for p in stale:
            p.unlink(missing_ok=True)
        return len(stale)
