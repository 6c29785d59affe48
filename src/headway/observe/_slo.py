"""SLOs evaluated in the gateway: burn rates over several windows and which alerts fire.

The method is the Google SRE workbook's, chapter 5 "Alerting on SLOs", section 6
"Multiwindow, multi-burn-rate alerts": the *burn rate* of a window is its error ratio divided
by the error budget ``1 - objective`` (burn rate 1 spends exactly the budget over the compliance
window); an alert fires when both its long and its short window burn at or above its factor.
The long window makes the alert significant (a 1 h window at 14.4x means 2% of a 30-day budget
is gone), the short one makes it reset soon after the burn stops.

What counts (our choices; the workbook leaves the SLI to the service):

- availability: an answered request is *bad* when its status is 5xx (the gateway or an upstream
  failed, including 502/503/504 refusals and timeouts), *good* when 1xx-3xx. 4xx answers are
  not events at all: a malformed body, a bad key, an unknown model, a tenant's own quota (429)
  or a client that hung up (499) say nothing about the service, and counting them as good would
  let a client that floods bad requests dilute real failures.
- latency: only successful answers (status < 400) are events (a failure is the availability
  SLO's business); one is *good* when answered within ``threshold`` seconds, measured to the
  whole response (``latency_of="total"``) or to the first byte of a streamed answer
  (``latency_of="ttft"``; a non-streamed answer's first byte is its whole response).

Memory and cost: each SLO keeps two rings of (total, bad) counters, a fine one (``resolution``,
60 s) covering its longest alert window and a coarse one (``budget_resolution``, 1 h) covering
its compliance window for the error budget. Recording is O(1): one clock read per request, one
dict lookup for the SLOs that cover its route and model, then two counter increments per SLO.
Reads (the admin API, a scrape) sum the rings. A window of ``w`` seconds covers the current slot
and the ``w/slot - 1`` before it, i.e. between the last ``w - slot`` and ``w`` seconds (the same
trade-off as :class:`SlidingSketch`); the error budget is therefore measured over between the
last ``window - 1 h`` and ``window``. Nothing older is ever counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from headway.core import REAL_CLOCK, Clock

from ._duration import format_duration

__all__ = [
    "WORKBOOK_ALERTS",
    "AlertState",
    "BurnAlert",
    "SloBook",
    "SloSpec",
    "SloStatus",
    "WindowBurn",
    "burn_rate",
    "slos_json",
    "status_json",
]

SloKind = Literal["availability", "latency"]
LatencyOf = Literal["total", "ttft"]
Severity = Literal["page", "ticket"]

_MINUTE = 60.0
_HOUR = 3600.0
_DAY = 86400.0

#: The workbook's compliance window for its burn-rate table (ch. 5: "30-day SLO").
DEFAULT_COMPLIANCE_WINDOW = 30 * _DAY
#: Slot widths of the two rings (our choice: a minute resolves the workbook's 5 m window to
#: 20%, an hour keeps a 30-day budget in 720 slots).
DEFAULT_RESOLUTION = _MINUTE
DEFAULT_BUDGET_RESOLUTION = _HOUR
# Burn rates are compared with this relative slack, so an error ratio of exactly
# factor x budget fires despite float rounding (14.4 x 0.001 is not exactly representable).
_SLACK = 1e-9


@dataclass(frozen=True, slots=True)
class BurnAlert:
    """Fire ``severity`` when both windows burn at ``burn_rate`` or faster."""

    severity: Severity
    long_window: float
    short_window: float
    burn_rate: float
    #: How long Prometheus' rule must hold before it fires (``for:``); the in-process
    #: evaluation reports the condition itself.
    for_seconds: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.short_window < self.long_window:
            raise ValueError("need 0 < short_window < long_window")
        if not self.burn_rate > 0:
            raise ValueError("burn_rate must be positive")

    @property
    def label(self) -> str:
        """``"1h/5m"``: how operators name a window pair."""
        return f"{format_duration(self.long_window)}/{format_duration(self.short_window)}"


#: Google SRE workbook, ch. 5 "Alerting on SLOs", "Multiwindow, Multi-Burn-Rate Alerts"
#: (for a 30-day window): page when 2% of the budget goes in 1 h (14.4x) or 5% in 6 h (6x);
#: ticket when 10% goes in 1 d (3x) or in 3 d (1x); each short window is 1/12 of its long one.
#: ``for:`` values are our choice (the workbook uses none, relying on the short window to
#: reset): long enough that one odd scrape never pages, short next to the short window.
WORKBOOK_ALERTS: tuple[BurnAlert, ...] = (
    BurnAlert("page", 1 * _HOUR, 5 * _MINUTE, 14.4, for_seconds=2 * _MINUTE),
    BurnAlert("page", 6 * _HOUR, 30 * _MINUTE, 6.0, for_seconds=15 * _MINUTE),
    BurnAlert("ticket", 1 * _DAY, 2 * _HOUR, 3.0, for_seconds=1 * _HOUR),
    BurnAlert("ticket", 3 * _DAY, 6 * _HOUR, 1.0, for_seconds=3 * _HOUR),
)


@dataclass(frozen=True, slots=True)
class SloSpec:
    """One SLO. ``model``/``route`` ``None`` cover every model / route."""

    name: str
    kind: SloKind
    #: Percent of events that must be good, e.g. 99.9.
    objective: float
    model: str | None = None
    route: str | None = None
    #: Latency SLOs: seconds an answer may take and still be good.
    threshold: float | None = None
    latency_of: LatencyOf = "total"
    #: Compliance window in seconds: the error budget is measured over it.
    window: float = DEFAULT_COMPLIANCE_WINDOW
    alerts: tuple[BurnAlert, ...] = WORKBOOK_ALERTS

    def __post_init__(self) -> None:
        if not 0 < self.objective < 100:
            raise ValueError(f"objective must be in (0, 100) percent, got {self.objective}")
        if self.kind == "latency" and not (self.threshold is not None and self.threshold > 0):
            raise ValueError("a latency SLO needs a positive threshold")
        if not self.window > 0:
            raise ValueError("window must be positive")

    @property
    def budget(self) -> float:
        """The error budget as a fraction of events (99.9% -> 0.001)."""
        return (100.0 - self.objective) / 100.0

    @property
    def windows(self) -> tuple[float, ...]:
        """Every distinct alert window, shortest first."""
        return tuple(sorted({w for a in self.alerts for w in (a.long_window, a.short_window)}))


def burn_rate(total: int, bad: int, budget: float) -> float:
    """Error ratio over the budget; 0 with no events (nothing was spent)."""
    return (bad / total) / budget if total else 0.0


@dataclass(frozen=True, slots=True)
class WindowBurn:
    seconds: float
    total: int
    bad: int
    burn_rate: float


@dataclass(frozen=True, slots=True)
class AlertState:
    alert: BurnAlert
    long: WindowBurn
    short: WindowBurn
    firing: bool


@dataclass(frozen=True, slots=True)
class SloStatus:
    """One SLO read at one instant."""

    spec: SloSpec
    windows: tuple[WindowBurn, ...]
    alerts: tuple[AlertState, ...]
    #: Events and bad events over the compliance window.
    total: int
    bad: int
    #: 1 - budget spent over the compliance window: 1.0 untouched, 0 spent, < 0 overspent.
    budget_remaining: float
    firing: tuple[Severity, ...] = field(default=())

    def window(self, seconds: float) -> WindowBurn:
        for w in self.windows:
            if w.seconds == seconds:
                return w
        raise KeyError(seconds)


class _Ring:
    """(total, bad) counters per time slot; a slot is reset when its epoch comes round again."""

    __slots__ = ("bad", "epochs", "size", "total", "width")

    def __init__(self, width: float, covers: float) -> None:
        self.width = width
        self.size = max(1, math.ceil(covers / width - _SLACK))
        self.epochs = [-1] * self.size
        self.total = [0] * self.size
        self.bad = [0] * self.size

    def slot(self, epoch: int) -> int:
        """The slot of ``epoch``, emptied first if it still holds an older epoch."""
        slot = epoch % self.size
        if self.epochs[slot] != epoch:
            self.epochs[slot] = epoch
            self.total[slot] = 0
            self.bad[slot] = 0
        return slot

    def sums(self, now: float, windows: Sequence[float]) -> list[tuple[int, int]]:
        """(total, bad) over each of ``windows`` (seconds, ascending), in one pass."""
        spans = [min(self.size, max(1, math.ceil(w / self.width - _SLACK))) for w in windows]
        out: list[tuple[int, int]] = []
        newest = int(now // self.width)
        total = bad = 0
        k = 0
        for span in spans:
            while k < span:
                epoch = newest - k
                slot = epoch % self.size
                if self.epochs[slot] == epoch:
                    total += self.total[slot]
                    bad += self.bad[slot]
                k += 1
            out.append((total, bad))
        return out


class SloTracker:
    """The event history of one SLO.

    The hot path keeps the current slot of each ring in attributes and only looks the slots up
    again when the clock crosses a fine slot boundary (``_until``); the coarse width is a
    multiple of the fine one, so its boundaries are crossed then too.
    """

    __slots__ = (
        "_availability",
        "_budget",
        "_budget_slot",
        "_fine",
        "_fine_slot",
        "_threshold",
        "_ttft",
        "_until",
        "spec",
    )

    def __init__(self, spec: SloSpec, resolution: float, budget_resolution: float) -> None:
        self.spec = spec
        longest = max((a.long_window for a in spec.alerts), default=resolution)
        self._fine = _Ring(resolution, longest)
        self._budget = _Ring(budget_resolution, spec.window)
        self._availability = spec.kind == "availability"
        self._threshold = spec.threshold if spec.threshold is not None else math.inf
        self._ttft = spec.latency_of == "ttft"
        self._until = -math.inf  # forces a slot lookup on the first event
        self._fine_slot = self._budget_slot = 0

    def observe(self, now: float, status: int, latency: float, ttft: float | None) -> None:
        if self._availability:
            if 400 <= status < 500:
                return
            bad = status >= 500
        else:
            if status >= 400:
                return
            seconds = ttft if self._ttft and ttft is not None else latency
            bad = seconds > self._threshold
        if now >= self._until or now < self._until - self._fine.width:
            self._roll(now)
        fine, budget = self._fine, self._budget
        fine.total[self._fine_slot] += 1
        budget.total[self._budget_slot] += 1
        if bad:
            fine.bad[self._fine_slot] += 1
            budget.bad[self._budget_slot] += 1

    def _roll(self, now: float) -> None:
        fine = self._fine
        epoch = int(now // fine.width)
        self._fine_slot = fine.slot(epoch)
        self._budget_slot = self._budget.slot(int(now // self._budget.width))
        self._until = (epoch + 1) * fine.width

    def status(self, now: float) -> SloStatus:
        spec = self.spec
        budget = spec.budget
        windows = spec.windows
        burns = {
            w: WindowBurn(w, total, bad, burn_rate(total, bad, budget))
            for w, (total, bad) in zip(windows, self._fine.sums(now, windows), strict=True)
        }
        alerts = []
        for alert in spec.alerts:
            long, short = burns[alert.long_window], burns[alert.short_window]
            floor = alert.burn_rate * (1 - _SLACK)
            firing = long.burn_rate >= floor and short.burn_rate >= floor
            alerts.append(AlertState(alert, long, short, firing))
        [(total, bad)] = self._budget.sums(now, [spec.window])
        severities = tuple(dict.fromkeys(a.alert.severity for a in alerts if a.firing))
        return SloStatus(
            spec,
            tuple(burns.values()),
            tuple(alerts),
            total,
            bad,
            1.0 - burn_rate(total, bad, budget),
            severities,
        )


class SloBook:
    """Every configured SLO of one gateway: ``record`` on the request path, ``statuses`` to read.

    Built again on each config reload with ``previous`` = the live book: an SLO whose definition
    did not change keeps its tracker, history and all (requests still finishing on the old
    runtime keep counting into it); a changed one starts afresh.
    """

    def __init__(
        self,
        specs: Iterable[SloSpec],
        *,
        clock: Clock = REAL_CLOCK,
        previous: SloBook | None = None,
        resolution: float = DEFAULT_RESOLUTION,
        budget_resolution: float = DEFAULT_BUDGET_RESOLUTION,
    ) -> None:
        ratio = budget_resolution / resolution
        if not (resolution > 0 and ratio >= 1 and ratio == round(ratio)):
            raise ValueError("budget_resolution must be a whole multiple of resolution")
        self._clock = clock
        self._resolution = (resolution, budget_resolution)
        kept: dict[str, SloTracker] = {}
        if previous is not None and previous._resolution == self._resolution:
            kept = {t.spec.name: t for t in previous.trackers}
        self.trackers: tuple[SloTracker, ...] = tuple(
            kept[s.name]
            if s.name in kept and kept[s.name].spec == s
            else SloTracker(s, resolution, budget_resolution)
            for s in specs
        )
        if len({t.spec.name for t in self.trackers}) != len(self.trackers):
            raise ValueError("SLO names must be unique")
        # route -> model -> the SLOs covering both; unknown models fall back to the SLOs that
        # cover every model (``_any``), so a raw model name from a request never adds a key.
        routes = {t.spec.route for t in self.trackers if t.spec.route is not None}
        models = {t.spec.model for t in self.trackers if t.spec.model is not None}
        self._index: dict[str, dict[str | None, tuple[SloTracker, ...]]] = {}
        self._any: dict[str, tuple[SloTracker, ...]] = {}
        for route in routes:
            self._index[route] = self._covering(route, models)
            self._any[route] = self._index[route][None]
        self._other_routes = self._covering(None, models)
        self._other_any = self._other_routes[None]

    def _covering(
        self, route: str | None, models: set[str]
    ) -> dict[str | None, tuple[SloTracker, ...]]:
        def covers(t: SloTracker, model: str | None) -> bool:
            s = t.spec
            return s.route in (None, route) and s.model in (None, model)

        return {m: tuple(t for t in self.trackers if covers(t, m)) for m in (*models, None)}

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def record(
        self, route: str, model: str | None, status: int, latency: float, ttft: float | None = None
    ) -> None:
        """One answered API request (``route`` as in metrics: chat, completions, embeddings)."""
        by_model = self._index.get(route)
        if by_model is None:
            trackers = self._other_routes.get(model, self._other_any)
        else:
            trackers = by_model.get(model, self._any[route])
        if not trackers:
            return
        now = self._clock.now()
        for tracker in trackers:
            tracker.observe(now, status, latency, ttft)

    def statuses(self) -> list[SloStatus]:
        now = self._clock.now()
        return [t.status(now) for t in self.trackers]

    def to_json(self) -> dict[str, Any]:
        """The admin API's ``GET /api/slos`` body."""
        return {"slos": [status_json(s) for s in self.statuses()]}


def slos_json(book: SloBook | None) -> dict[str, Any]:
    """``{"slos": [...]}`` for the admin API (an empty list when none is configured)."""
    return {"slos": []} if book is None else book.to_json()


def _window_json(w: WindowBurn) -> dict[str, Any]:
    return {
        "window": format_duration(w.seconds),
        "seconds": w.seconds,
        "total": w.total,
        "bad": w.bad,
        "burn_rate": w.burn_rate,
    }


def status_json(status: SloStatus) -> dict[str, Any]:
    """One SLO's state as plain JSON values."""
    spec = status.spec
    return {
        "name": spec.name,
        "kind": spec.kind,
        "model": spec.model if spec.model is not None else "*",
        "route": spec.route if spec.route is not None else "*",
        "objective": spec.objective,
        "threshold": spec.threshold,
        "latency_of": spec.latency_of if spec.kind == "latency" else None,
        "compliance_window": format_duration(spec.window),
        "events": {"total": status.total, "bad": status.bad},
        "error_budget_remaining": status.budget_remaining,
        "windows": [_window_json(w) for w in status.windows],
        "alerts": [
            {
                "severity": a.alert.severity,
                "windows": a.alert.label,
                "burn_rate_threshold": a.alert.burn_rate,
                "long_burn_rate": a.long.burn_rate,
                "short_burn_rate": a.short.burn_rate,
                "firing": a.firing,
            }
            for a in status.alerts
        ],
        "firing": list(status.firing),
    }
