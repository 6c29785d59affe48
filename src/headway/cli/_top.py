"""``headway top``: the dashboard's live numbers in a terminal, for people who live in the shell.

It polls the admin API (``/api/status``, ``/api/timeline``, ``/api/slos`` when present) and
redraws in place with plain ANSI escapes (no curses, so it works in any terminal and over ssh);
``--once`` prints one frame without escapes and exits, for scripts and tests. Colour only when
stdout is a terminal and ``NO_COLOR`` is unset (no-color.org).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

__all__ = ["AdminError", "admin_request", "render", "top_main"]

# Unicode block "sparkline" levels, lowest to highest.
_BARS = "▁▂▃▄▅▆▇█"
_HOME, _CLEAR_LINE, _CLEAR_REST = "\x1b[H", "\x1b[K", "\x1b[J"
_HIDE_CURSOR, _SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"
_COLORS = {"green": "32", "yellow": "33", "red": "31", "dim": "2", "bold": "1"}
_STATE_COLOR = {
    "healthy": "green",
    "closed": "green",
    "half_open": "yellow",
    "drained": "dim",
    "ejected": "red",
    "breaker_open": "red",
    "open": "red",
}
_ENDPOINT_HEADER = "POOL ENDPOINT HEALTH BREAKER INFL LIMIT P50 P99 P99.9 REQS FAILS"
# The sparklines show the last minute.
SPARK_SECONDS = 60


class AdminError(Exception):
    """The admin API could not be read; the message says why and what to do."""


def add_admin_arguments(parser: argparse.ArgumentParser) -> None:
    """``--url`` and ``--token``: how every admin-API command reaches the gateway."""
    parser.add_argument(
        "--url",
        default="http://127.0.0.1:8081",
        help="the gateway's admin address (default: %(default)s)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("HEADWAY_ADMIN_TOKEN"),
        help="admin token (default: $HEADWAY_ADMIN_TOKEN)",
    )


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="headway top", description="Live gateway numbers from the admin API."
    )
    add_admin_arguments(parser)
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between refreshes (default: 1)"
    )
    parser.add_argument("--once", action="store_true", help="print one frame and exit")
    args = parser.parse_args(list(argv))
    if not args.interval > 0:
        parser.error("--interval must be a positive number of seconds")
    return args


_EXAMPLE_URL = "e.g. http://127.0.0.1:8081, server.admin_listen"
_IS_ADMIN = f"is it a Headway admin port ({_EXAMPLE_URL})?"
#: Said when an answer is JSON but not the admin API's (another service on that port).
NOT_ADMIN = "answered, but not like the Headway admin API: " + _IS_ADMIN


def _get(url: str, token: str | None, *, optional: bool = False) -> Any:
    return admin_request(url, token, optional=optional)


def admin_request(
    url: str,
    token: str | None,
    *,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
    optional: bool = False,
) -> Any:
    """One admin API call: JSON in (``body``), JSON out; ``AdminError`` saying what went wrong
    (with the gateway's own error message) otherwise. ``optional``: a 404 returns None."""
    data = None if body is None else json.dumps(body).encode()
    if not url.lower().startswith(("http://", "https://")):  # urllib: "unknown url type"
        raise AdminError(f"bad admin URL {url!r}: it starts with http:// ({_EXAMPLE_URL})")
    try:
        request = urllib.request.Request(
            url, data=data, method=method, headers={"Accept": "application/json", **(headers or {})}
        )
    except ValueError as error:  # no scheme, a broken IPv6 literal, ...
        raise AdminError(f"bad admin URL {url!r}: {error} ({_EXAMPLE_URL})") from None
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            raw = answer.read()
    except urllib.error.HTTPError as error:
        if optional and error.code == 404:
            return None
        if error.code == 401:
            raise AdminError(
                "the admin API needs a token: pass --token or set HEADWAY_ADMIN_TOKEN"
            ) from None
        try:
            message = json.loads(error.read())["error"]["message"]
        except (ValueError, KeyError, TypeError, OSError):
            message = None
        detail = f": {message}" if message else ""
        raise AdminError(f"{url} answered HTTP {error.code}{detail}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise AdminError(f"cannot reach {url}: {reason}") from None
    except (ValueError, http.client.HTTPException) as error:  # e.g. a port that speaks no HTTP
        kind = type(error).__name__
        raise AdminError(f"{url} gave no valid HTTP answer ({kind}): {_IS_ADMIN}") from None
    try:
        return json.loads(raw)
    except ValueError:
        raise AdminError(f"{url} did not answer JSON: {_IS_ADMIN}") from None


def fetch(url: str, token: str | None) -> tuple[Any, Any, Any]:
    base = url.rstrip("/")
    status = _get(base + "/api/status", token)
    timeline = _get(f"{base}/api/timeline?seconds={SPARK_SECONDS}", token)
    slos = _get(base + "/api/slos", token, optional=True)
    return status, timeline, slos


# -- formatting --------------------------------------------------------------------------------


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.1f}ms"
    return f"{value:.2f}s"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}/s"


def _spark(values: list[float | None], width: int) -> str:
    """The last ``width`` values as block characters, scaled to their maximum (gaps blank)."""
    values = values[-width:]
    top = max((v for v in values if v is not None), default=0.0)
    out = []
    for v in values:
        if v is None:
            out.append(" ")
        elif top <= 0:
            out.append(_BARS[0])
        else:
            out.append(_BARS[min(len(_BARS) - 1, int(v / top * (len(_BARS) - 1) + 0.5))])
    return "".join(out)


def _meter(used: float | None, limit: float | None, width: int = 10) -> str:
    if limit is None:
        return "unlimited"
    if used is None:
        return f"?/{limit:g}"
    filled = min(width, round(used / limit * width)) if limit else width
    return f"{'█' * filled}{'░' * (width - filled)} {used:.0f}/{limit:g}"


class _Painter:
    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, text: str, style: str | None) -> str:
        code = _COLORS.get(style or "")
        return f"\x1b[{code}m{text}\x1b[0m" if self.color and code else text


def _table(rows: list[list[str]], styles: list[list[str | None]], paint: _Painter) -> list[str]:
    """Left-aligned text columns, right-aligned numbers, padded before colouring."""
    columns = range(len(rows[0]))
    widths = [max(len(row[i]) for row in rows) for i in columns]
    # A column of numbers (below its header) is right-aligned, header included.
    numeric = [
        len(rows) > 1 and all(row[i][:1].isdigit() or row[i] == "-" for row in rows[1:])
        for i in columns
    ]
    lines = []
    for row, row_styles in zip(rows, styles, strict=True):
        cells = []
        for i, cell in enumerate(row):
            padded = cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i])
            cells.append(paint(padded, row_styles[i]))
        lines.append("  ".join(cells).rstrip())
    return lines


def render(
    status: dict[str, Any],
    timeline: dict[str, Any],
    slos: dict[str, Any] | None,
    *,
    url: str,
    width: int = 100,
    color: bool = False,
) -> str:
    """One frame of ``headway top`` as text (no cursor movement)."""
    paint = _Painter(color)
    config = status["config"]
    traffic = status["traffic"]
    admission = status["admission"]
    samples = timeline.get("samples", [])
    last = samples[-1] if samples else {}
    loaded = max(0.0, time.time() - config["loaded_at"])
    lines = [
        paint("headway top", "bold")
        + f"  {url}  config {config['hash']} {config['source']}"
        + f"  loaded {loaded:.0f}s ago  reloads {config['reloads']}",
    ]
    if traffic.get("metrics"):
        lat = traffic.get("latency") or {}
        lines.append(
            f"requests {traffic['requests']:,} total  {_rate(last.get('rps'))}"
            f"  errors {traffic['errors']:,} ({_rate(last.get('error_rate'))})"
            f"  shed/429 {traffic['shed']:,} ({_rate(last.get('shed_rate'))})"
            f"  in flight {traffic['inflight']}  queued {admission.get('queued', 0):.0f}"
        )
        lines.append(
            f"latency (last minute)  p50 {_secs(lat.get('p50'))}  p90 {_secs(lat.get('p90'))}"
            f"  p99 {_secs(lat.get('p99'))}  p99.9 {_secs(lat.get('p999'))}"
        )
        spark = max(10, min(SPARK_SECONDS, width - 12))
        errors = [s["error_rate"] + s["shed_rate"] for s in samples]
        for label, values in (
            ("req/s", [s["rps"] for s in samples]),
            ("p99", [s["p99"] for s in samples]),
            ("err+shed", errors),
        ):
            lines.append(f"{label:<9} {_spark(values, spark)}")
    else:
        lines.append(f"in flight {traffic['inflight']}  (metrics are off: observe.metrics: false)")
    lines.append("")
    rows = [_ENDPOINT_HEADER.split()]
    styles: list[list[str | None]] = [["dim"] * len(rows[0])]
    for pool in status["pools"]:
        for ep in pool["endpoints"]:
            lat = ep.get("latency") or {}
            rows.append(
                [
                    pool["name"] + (" (panic)" if pool.get("panic") else ""),
                    ep["name"],
                    ep["health"],
                    ep["breaker"],
                    str(ep["inflight"]),
                    str(ep["limit"]),
                    _secs(lat.get("p50")),
                    _secs(lat.get("p99")),
                    _secs(lat.get("p999")),
                    str(ep["requests"]),
                    str(ep["failures"]),
                ]
            )
            health, breaker = _STATE_COLOR.get(ep["health"]), _STATE_COLOR.get(ep["breaker"])
            styles.append([None, None, health, breaker, *[None] * 7])
    lines.extend(_table(rows, styles, paint))
    if status["tenants"]:
        lines.append("")
        rows = [["TENANT", "PRIORITY", "RPM", "TPM", "CONCURRENCY"]]
        styles = [["dim"] * 5]
        for t in status["tenants"]:
            rpm, tpm = t.get("rpm") or {}, t.get("tpm") or {}
            rows.append(
                [
                    t["name"],
                    t["priority"],
                    _meter(rpm.get("used"), rpm.get("limit")),
                    _meter(tpm.get("used"), tpm.get("limit")),
                    _meter(t["inflight"], t.get("max_concurrency")),
                ]
            )
            styles.append([None] * 5)
        lines.extend(_table(rows, styles, paint))
    if slos and slos.get("slos"):
        lines.append("")
        rows = [["SLO", "OBJECTIVE", "BUDGET LEFT", "BURN RATES", "STATUS"]]
        styles = [["dim"] * 5]
        for s in slos["slos"]:
            windows = s.get("windows", [])[:4]
            burns = " ".join(f"{w['window']}:{w['burn_rate']:.2f}x" for w in windows)
            firing = s.get("firing") or []
            budget = s.get("error_budget_remaining")
            rows.append(
                [
                    s["name"],
                    f"{s['objective']:g}% {s.get('kind', '')}".strip(),
                    "-" if budget is None else f"{budget * 100:.1f}%",
                    burns or "-",
                    "FIRING " + ",".join(firing) if firing else "ok",
                ]
            )
            styles.append([None, None, None, None, "red" if firing else "green"])
        lines.extend(_table(rows, styles, paint))
    return "\n".join(lines) + "\n"


# -- the command ---------------------------------------------------------------------------


def _frame(url: str, token: str | None, *, color: bool) -> str:
    documents = fetch(url, token)
    try:
        return render(*documents, url=url, width=_width(), color=color)
    except (KeyError, TypeError, AttributeError, ValueError):  # JSON, but not the admin API's
        raise AdminError(f"{url} {NOT_ADMIN}") from None


def top_main(argv: Sequence[str]) -> int:
    args = _parse(argv)
    out = sys.stdout
    if args.once:
        try:
            frame = _frame(args.url, args.token, color=False)
        except AdminError as error:
            print(f"headway top: {error}", file=sys.stderr)
            return 1
        out.write(frame)
        return 0
    color = out.isatty() and "NO_COLOR" not in os.environ
    out.write(_HIDE_CURSOR)
    try:
        while True:
            try:
                frame = _frame(args.url, args.token, color=color)
            except AdminError as error:
                frame = f"headway top  {args.url}\n\n{error}\n(retrying every {args.interval:g}s)\n"
            lines = frame.split("\n")
            out.write(_HOME + (_CLEAR_LINE + "\n").join(lines) + _CLEAR_REST)
            out.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        out.write(_SHOW_CURSOR + "\n")
        out.flush()


def _width() -> int:
    return shutil.get_terminal_size((100, 30)).columns
