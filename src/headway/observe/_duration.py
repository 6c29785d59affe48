"""Durations as operators write them in SLOs and Prometheus rules: ``5m``, ``6h``, ``30d``.

``parse_duration`` accepts seconds as a number or a Prometheus-style string (units ``s m h d w``,
combinable: ``1h30m``); ``format_duration`` writes seconds back in the shortest such form, which
is also valid in PromQL range selectors and the ``for:`` of an alerting rule.
"""

from __future__ import annotations

import math
import re

__all__ = ["format_duration", "parse_duration"]

_UNITS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?[wdhms])+")


def parse_duration(value: object) -> float:
    """Seconds of ``value`` (a number of seconds, or e.g. ``"5m"``, ``"1h30m"``);
    ``ValueError`` for anything else, negative or not finite."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '5m', '1h', '30d' or seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and _WHOLE.fullmatch(value.strip()):
        seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(value.strip()))
    else:
        raise ValueError(f"expected a duration such as '5m', '1h', '30d' or seconds, got {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be finite and not negative, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """``300`` -> ``"5m"``, ``5400`` -> ``"1h30m"``, ``0`` -> ``"0s"`` (whole seconds; a
    fraction is rounded up so a window never shrinks)."""
    left = math.ceil(seconds)
    if left <= 0:
        return "0s"
    parts: list[str] = []
    for unit in ("d", "h", "m", "s"):  # not weeks: "7d" reads better than "1w"
        size = int(_UNITS[unit])
        count, left = divmod(left, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
