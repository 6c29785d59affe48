"""Service level objectives: what share of requests must be good, per model and route, and when
a burning error budget pages or files a ticket (``headway.observe.SloSpec``).

Defaults are the Google SRE workbook's (ch. 5 "Alerting on SLOs"): a 30-day compliance window
and four multiwindow burn-rate alerts. Checks that relate fields (a latency SLO's threshold, the
windows' order) run with the cross-section checks (``slo_issues``, called by ``_crossref``), so
each mistake is reported at its own field path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, WithJsonSchema

from headway.observe import (
    LLM_BUCKETS,
    WORKBOOK_ALERTS,
    BurnAlert,
    SloSpec,
    format_duration,
    parse_duration,
)

from ._base import Section
from ._errors import ConfigIssue

__all__ = ["Duration", "SloAlertConfig", "SloConfig", "slo_issues"]

#: Seconds, written as a number or as '5m', '6h', '30d', '1h30m'.
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^(\d+(\.\d+)?[wdhms])+$"},
            ],
            "description": "seconds, or a duration such as '5m', '6h', '30d'",
        }
    ),
]

# SLO windows are counted in 1-minute slots, the error budget in 1-hour slots
# (headway.observe._slo); windows must fall on them so nothing is silently rounded.
_SLOT = 60.0
_BUDGET_SLOT = 3600.0
# Bounds that keep each SLO's rings small (a 7-day alert window is 10,080 slots; a year of
# budget is 8,760): the workbook's longest alert window is 3 days, its budget window 30 days.
_MAX_ALERT_WINDOW = 7 * 86400.0
_MAX_WINDOW = 366 * 86400.0


class SloAlertConfig(Section):
    """A multiwindow burn-rate alert (SRE workbook ch. 5): fires while the error budget burns
    at 'burn_rate' times the sustainable rate over both windows."""

    # 'for' is a Python keyword: the field is for_, written 'for' (a dump, which says for_,
    # validates again too).
    model_config = ConfigDict(populate_by_name=True)

    severity: Literal["page", "ticket"]
    """'page' wakes someone up; 'ticket' is for the next working day."""
    long_window: Duration
    """The window that makes the alert significant (e.g. '1h')."""
    short_window: Duration
    """The window that lets it reset soon after the burn stops (e.g. '5m', 1/12 of long)."""
    burn_rate: float = Field(gt=0)
    """Error ratio over the error budget at which it fires (14.4 spends 2% of a 30-day budget
    in an hour)."""
    for_: Duration = Field(default=0.0, alias="for")
    """How long the condition must hold before Prometheus fires it ('for:' of the rule)."""


def _default_alerts() -> tuple[SloAlertConfig, ...]:
    return tuple(
        SloAlertConfig.model_validate(
            {
                "severity": a.severity,
                "long_window": a.long_window,
                "short_window": a.short_window,
                "burn_rate": a.burn_rate,
                "for": a.for_seconds,
            }
        )
        for a in WORKBOOK_ALERTS
    )


class SloConfig(Section):
    """A service level objective evaluated by the gateway (GET /api/slos, headway_slo_* metrics)
    and exportable as Prometheus rules ('headway slo rules CONFIG')."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    """Name, shown as the 'slo' label."""
    kind: Literal["availability", "latency"]
    """'availability': 5xx answers are bad, 1xx-3xx good, 4xx (client errors, tenant quotas,
    clients that hung up) are not counted. 'latency': successful answers within 'threshold'
    seconds are good."""
    objective: float = Field(gt=0, lt=100)
    """Percent of counted requests that must be good, e.g. 99.9."""
    model: str = Field(default="*", min_length=1)
    """A configured model name, or '*' for every model."""
    route: Literal["*", "chat", "completions", "embeddings"] = "*"
    """The API route covered, or '*' for all."""
    threshold: float | None = Field(default=None, gt=0)
    """Latency SLOs: seconds an answer may take; one of the latency histogram's bucket bounds
    (0.001 ... 120) so Prometheus rules can count it exactly."""
    latency_of: Literal["total", "ttft"] | None = None
    """Latency SLOs: 'total' (default) times the whole answer, 'ttft' a stream's first byte (a
    non-streamed answer's first byte is its whole answer)."""
    window: Duration = 30 * 86400.0
    """Compliance window the error budget is measured over (SRE workbook: 30 days); whole
    hours."""
    alerts: tuple[SloAlertConfig, ...] = Field(default=_default_alerts(), min_length=1)
    """Burn-rate alerts (default: the workbook's page at 1h/5m 14.4x and 6h/30m 6x, ticket at
    1d/2h 3x and 3d/6h 1x)."""

    def to_spec(self) -> SloSpec:
        """The ``headway.observe.SloSpec`` this SLO describes."""
        return SloSpec(
            name=self.name,
            kind=self.kind,
            objective=self.objective,
            model=None if self.model == "*" else self.model,
            route=None if self.route == "*" else self.route,
            threshold=self.threshold,
            latency_of=self.latency_of or "total",
            window=self.window,
            alerts=tuple(
                BurnAlert(a.severity, a.long_window, a.short_window, a.burn_rate, a.for_)
                for a in self.alerts
            ),
        )


def _seconds(value: Any) -> float | None:
    try:
        return parse_duration(value)
    except ValueError:
        return None  # type validation reports it


def _whole(seconds: float, slot: float) -> bool:
    return seconds > 0 and math.isclose(seconds / slot, round(seconds / slot))


def slo_issues(entry: Mapping[str, Any], path: str) -> list[ConfigIssue]:
    """Mistakes that relate an SLO's fields (``entry`` as plain data at ``path``)."""
    issues: list[ConfigIssue] = []
    kind = entry.get("kind")
    threshold = entry.get("threshold")
    if kind == "latency":
        if threshold is None:
            issues.append(ConfigIssue(f"{path}.threshold", "a latency SLO needs a threshold"))
        elif isinstance(threshold, int | float) and threshold > 0 and threshold not in LLM_BUCKETS:
            bounds = ", ".join(f"{b:g}" for b in LLM_BUCKETS)
            issues.append(
                ConfigIssue(
                    f"{path}.threshold",
                    f"must be a latency histogram bucket bound so Prometheus rules count it "
                    f"exactly (one of {bounds}), got {threshold:g}",
                )
            )
    elif kind == "availability":
        for name in ("threshold", "latency_of"):
            if entry.get(name) is not None:
                issues.append(ConfigIssue(f"{path}.{name}", "applies to latency SLOs only"))
    window = _seconds(entry.get("window", 30 * 86400.0))
    if window is not None and not (_whole(window, _BUDGET_SLOT) and window <= _MAX_WINDOW):
        issues.append(
            ConfigIssue(
                f"{path}.window",
                f"must be whole hours, at most {format_duration(_MAX_WINDOW)}"
                f" (got {format_duration(window)})",
            )
        )
    alerts = entry.get("alerts")
    if isinstance(alerts, list | tuple):
        for a, alert in enumerate(alerts):
            if isinstance(alert, Mapping):
                issues.extend(_alert_issues(alert, f"{path}.alerts[{a}]", window))
    return issues


def _alert_issues(alert: Mapping[str, Any], path: str, window: float | None) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    long = _seconds(alert.get("long_window"))
    short = _seconds(alert.get("short_window"))
    for name, seconds in (("long_window", long), ("short_window", short)):
        if seconds is not None and not _whole(seconds, _SLOT):
            issues.append(
                ConfigIssue(f"{path}.{name}", f"must be whole minutes (got {seconds:g}s)")
            )
    if long is None or short is None:
        return issues
    if short >= long:
        issues.append(
            ConfigIssue(
                f"{path}.short_window",
                f"must be shorter than long_window ({format_duration(short)} >= "
                f"{format_duration(long)})",
            )
        )
    if long > _MAX_ALERT_WINDOW:
        issues.append(
            ConfigIssue(
                f"{path}.long_window",
                f"must be at most {format_duration(_MAX_ALERT_WINDOW)} "
                f"(got {format_duration(long)})",
            )
        )
    elif window is not None and long > window:
        issues.append(
            ConfigIssue(
                f"{path}.long_window",
                f"must not exceed the SLO's window ({format_duration(long)} > "
                f"{format_duration(window)})",
            )
        )
    return issues
