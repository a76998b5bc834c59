"""The package version, in its own module so that any layer can read it without importing the package root."""

from __future__ import annotations

__version__ = "0.3.2"
