"""The HTML layer below circuits and galleries: one Jinja2 environment with autoescaping, image encoding for
pages (PNG/WebP bytes, data URIs, kernel and heat pictures), the shared templates and the static assets."""

from __future__ import annotations

from .encode import data_uri, heat_image, image_bytes, kernel_heatmap, kernel_image
from .env import STATIC, TEMPLATES, Crumb, Frame, environment, render_page

__all__ = [
    "STATIC",
    "TEMPLATES",
    "Crumb",
    "Frame",
    "data_uri",
    "environment",
    "heat_image",
    "image_bytes",
    "kernel_heatmap",
    "kernel_image",
    "render_page",
]
