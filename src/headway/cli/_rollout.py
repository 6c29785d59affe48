"""``headway rollout start|status|pause|resume|promote|abort``: canary rollouts from the shell.

Talks to a running gateway's admin API (``--url``, default the demo's admin port; ``--token`` or
``$HEADWAY_ADMIN_TOKEN``) through the same HTTP helper as ``headway top``. Commands that change
a rollout send the user's name as ``x-headway-actor``, so decisions and the audit log say who.
``status`` prints a table: every step with a progress marker, the weight, and the last analysis
with each metric's verdict, measured values, thresholds and reason.

Exit codes: 0 done, 1 refused or unreachable (the gateway's message is printed), 2 usage.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from ._top import NOT_ADMIN, AdminError, add_admin_arguments, admin_request

__all__ = ["render_rollout", "rollout_main"]

COMMANDS = ("start", "status", "pause", "resume", "promote", "abort")
_MARKS = {"done": "✓", "current": "▶", "aborted": "✗", "pending": " ", "skipped": "-"}
# Measured values shown as percentages, and as durations.
_RATES = {"rate_a", "rate_b", "difference", "tolerance"}
_SECONDS = {
    "median_a",
    "median_b",
    "shift",
    "shift_lower",
    "shift_upper",
    "tail_a",
    "tail_b",
    "allowance",
}


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="headway rollout",
        description="Canary rollouts on a running gateway (through its admin API).",
    )
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("model", nargs="?", help="the model whose canary rolls out")
    parser.add_argument(
        "--spec",
        help="start: a rollout spec (YAML or JSON: steps, analysis); default: the gateway's "
        "default steps (5%% -> 25%% -> 50%% -> 100%%, one-minute analyses)",
    )
    parser.add_argument("--reason", default="", help="pause/resume/promote/abort: why")
    parser.add_argument("--json", action="store_true", help="status: print the raw JSON")
    add_admin_arguments(parser)
    args = parser.parse_args(list(argv))
    if args.command != "status" and not args.model:
        parser.error(f"{args.command} needs a MODEL")
    if args.spec and args.command != "start":
        parser.error("--spec goes with start")
    return args


def rollout_main(argv: Sequence[str]) -> int:
    try:
        args = _parse(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage, 0 on --help
        return exc.code if isinstance(exc.code, int) else 2
    base = args.url.rstrip("/") + "/api/rollouts"
    path = base if args.model is None else f"{base}/{quote(args.model, safe='')}"
    headers = {"x-headway-actor": _user()}
    try:
        if args.command == "status":
            document = admin_request(path, args.token)
        elif args.command == "start":
            spec = _read_spec(args.spec) if args.spec else None
            document = admin_request(path, args.token, method="POST", body=spec, headers=headers)
        else:
            body = {"reason": args.reason} if args.reason else None
            document = admin_request(
                f"{path}/{args.command}", args.token, method="POST", body=body, headers=headers
            )
    except (AdminError, _SpecError) as error:
        print(f"headway rollout {args.command}: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(document, indent=2))
        return 0
    try:
        if "rollouts" in document:
            rollouts = document["rollouts"]
            text = "\n\n".join(render_rollout(r) for r in rollouts) if rollouts else "no rollouts"
        else:
            text = render_rollout(document)
    except (KeyError, TypeError, AttributeError, ValueError):  # JSON, but not a rollout's
        print(f"headway rollout {args.command}: {args.url} {NOT_ADMIN}", file=sys.stderr)
        return 1
    print(text)
    return 0


class _SpecError(Exception):
    pass


def _read_spec(path: str) -> Any:
    try:
        return yaml.safe_load(Path(path).read_text("utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise _SpecError(f"cannot read {path}: {error}") from None
    except yaml.YAMLError as error:
        raise _SpecError(f"{path} is not valid YAML: {error}") from None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


# -- the status table ----------------------------------------------------------------------------


def _value(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    if key in _RATES:
        return f"{value * 100:.2f}%"
    if key in _SECONDS:
        return f"{value * 1000:.0f}ms"
    if key in ("p_value", "alpha"):
        return f"{value:.2g}"
    return f"{value:.4g}"


def _numbers(values: dict[str, float | None]) -> str:
    return " ".join(f"{k}={_value(k, v)}" for k, v in values.items()) or "-"


def _clock(wall: float | None) -> str:
    return "" if wall is None else time.strftime("%H:%M:%S", time.localtime(wall))


def render_rollout(r: dict[str, Any]) -> str:
    """A rollout from the admin API as a readable block of text."""
    split = r.get("split") or {}
    lines = [
        f"{r['model']}  rollout {r['name']!r}  {r['phase'].upper()}  weight {r['weight']}%  "
        f"step {min(r['step'] + 1, len(r['steps']))}/{len(r['steps'])}",
        f"  status: {r['status']}",
    ]
    if split:
        req, err = split.get("requests", {}), split.get("errors", {})
        lines.append(
            f"  traffic: stable {req.get('stable', 0)} req ({err.get('stable', 0)} errors), "
            f"canary {req.get('canary', 0)} req ({err.get('canary', 0)} errors), "
            f"{split.get('fallbacks', 0)} canary failures served on stable"
        )
    lines.append("  steps:")
    for step in r["steps"]:
        mark = _MARKS.get(step["state"], "?")
        lines.append(f"    {mark} {step['index'] + 1}. {step['text']}")
    last = r.get("last_analysis")
    if last is not None:
        score = "-" if last["score"] is None else f"{last['score']:.0f}"
        span = last["end"] - last["start"]
        lines.append(
            f"  last analysis ({span:.1f}s window): {last['verdict'].upper()} score {score} "
            f"(pass >= {last['pass_score']:g}, marginal >= {last['marginal_score']:g}): "
            f"{last['reason']}"
        )
        for m in last["metrics"]:
            name = m["name"] + ("*" if m["critical"] else "")
            lines.append(
                f"    {name:<10} {m['verdict'].upper():<9} canary {m['canary_count']:>5}  "
                f"baseline {m['baseline_count']:>5}"
            )
            lines.append(f"      measured:   {_numbers(m['measured'])}")
            lines.append(f"      thresholds: {_numbers(m['thresholds'])}")
            lines.append(f"      reason:     {m['reason']}")
        lines.append("    (* critical: its failure fails the analysis)")
    decisions = r.get("decisions") or []
    if decisions:
        lines.append(f"  decisions (last {len(decisions)} of {r.get('decisions_total', '?')}):")
        for d in decisions:
            lines.append(
                f"    {_clock(d.get('wall_time'))} +{d['at']:.1f}s {d['action']:<13} "
                f"{d['weight']:>3}%  {d['by']}: {d['reason']}"
            )
    return "\n".join(lines)
