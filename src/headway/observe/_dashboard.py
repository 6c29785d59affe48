"""The admin port's dashboard: one self-contained HTML page (inline CSS and JavaScript).

Nothing on the page is fetched from anywhere but the admin API it is served by (no CDN, no
fonts, no build step), so it works on an air-gapped host and leaks nothing to third parties.
It carries no data itself: it polls ``/api/status``, ``/api/timeline`` and ``/api/slos`` with
the admin token, so serving it needs no token.
"""

from __future__ import annotations

import functools
from importlib.resources import files

__all__ = ["dashboard_page"]


@functools.cache
def dashboard_page() -> bytes:
    """The page's bytes (read once from the package data, ``headway/observe/dashboard.html``)."""
    return files("headway.observe").joinpath("dashboard.html").read_bytes()
