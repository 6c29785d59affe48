"""Timing harness for per-call overhead: best-of-N loops, side by side, printed with ratios.

Each case is a zero-argument callable returning an awaitable (or a plain value for synchronous
peers). The loop subtracts nothing: what is printed is the whole cost of one guarded call of a
no-op, which is what a user pays. Best-of-repeats filters scheduler noise on a shared machine.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

Thunk = Callable[[], Any]


@dataclass(frozen=True)
class Case:
    group: str
    impl: str
    make: Callable[[], Thunk]
    headway: bool = False
    note: str = ""


@dataclass(frozen=True)
class Result:
    case: Case
    ns_per_call: float


async def _time_async(fn: Callable[[], Awaitable[Any]], n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        await fn()
    return (time.perf_counter_ns() - start) / n


def _time_sync(fn: Callable[[], Any], n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - start) / n


async def measure(case: Case, n: int, repeats: int) -> Result:
    fn = case.make()
    probe = fn()
    is_async = inspect.isawaitable(probe)
    if is_async:
        await probe
    best = float("inf")
    for _ in range(repeats):
        elapsed = await _time_async(fn, n) if is_async else _time_sync(fn, n)
        best = min(best, elapsed)
    return Result(case, best)


def render(results: list[Result]) -> str:
    """A Markdown table: per group, each impl's ns/call and its ratio to Headway's."""
    lines = [
        "| primitive | implementation | ns/call | x Headway |",
        "|---|---|---:|---:|",
    ]
    groups: dict[str, list[Result]] = {}
    for r in results:
        groups.setdefault(r.case.group, []).append(r)
    for group, rs in groups.items():
        ours = [r for r in rs if r.case.headway]
        base = ours[0].ns_per_call if ours else None
        for r in rs:
            ratio = f"{r.ns_per_call / base:.1f}x" if base else "-"
            name = f"**{r.case.impl}**" if r.case.headway else r.case.impl
            note = f" ({r.case.note})" if r.case.note else ""
            lines.append(f"| {group} | {name}{note} | {r.ns_per_call:,.0f} | {ratio} |")
    return "\n".join(lines)


def verdicts(results: list[Result]) -> list[str]:
    """Per group: how much cheaper Headway is than the fastest peer (goal: >= 2x)."""
    out = []
    groups: dict[str, list[Result]] = {}
    for r in results:
        groups.setdefault(r.case.group, []).append(r)
    for group, rs in groups.items():
        ours = [r for r in rs if r.case.headway]
        peers = [r for r in rs if not r.case.headway and not r.case.note.startswith("baseline")]
        if not ours or not peers:
            continue
        fastest = min(peers, key=lambda r: r.ns_per_call)
        ratio = fastest.ns_per_call / ours[0].ns_per_call
        mark = "ok " if ratio >= 2.0 else "MISS"
        out.append(f"{mark} {group}: {ratio:.1f}x cheaper than fastest peer ({fastest.case.impl})")
    return out
