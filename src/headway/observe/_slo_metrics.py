"""SLO state as Prometheus gauges, computed at scrape time from the live :class:`SloBook`.

Gauges (prefix ``headway_``)::

    slo_objective_ratio{slo}                 the objective, 0..1 (99.9% -> 0.999)
    slo_burn_rate{slo,window}                error ratio / error budget over each alert window
    slo_error_budget_remaining{slo}          1 - budget spent over the compliance window
    slo_alert{slo,severity}                  1 while an alert of that severity fires, else 0

Nothing is pushed from the request path; a scrape costs a sum over each SLO's rings. These are
this process's view: with several workers each one evaluates the requests it served (the
multi-process merge keeps one series per worker, as for every gauge), while the Prometheus
rules from ``headway slo rules`` evaluate the merged counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._duration import format_duration
from ._slo import SloBook

__all__ = ["SloCollector"]


class SloCollector(Collector):
    """Reads ``source()`` (the live book, or None when no SLO is configured) at each scrape."""

    def __init__(self, source: Callable[[], SloBook | None], *, prefix: str = "headway") -> None:
        self._source = source
        self._prefix = prefix

    def describe(self) -> Iterable[Metric]:
        return ()  # names depend on the config at scrape time

    def collect(self) -> Iterable[Metric]:
        book = self._source()
        if not book:
            return []
        p = self._prefix
        objective = GaugeMetricFamily(
            f"{p}_slo_objective_ratio", "SLO objective as a ratio (99.9% = 0.999).", labels=["slo"]
        )
        burn = GaugeMetricFamily(
            f"{p}_slo_burn_rate",
            "Error ratio over the window divided by the error budget (1 = on budget).",
            labels=["slo", "window"],
        )
        remaining = GaugeMetricFamily(
            f"{p}_slo_error_budget_remaining",
            "Share of the compliance window's error budget left (negative: overspent).",
            labels=["slo"],
        )
        alert = GaugeMetricFamily(
            f"{p}_slo_alert",
            "1 while a multiwindow burn-rate alert of this severity fires (SRE workbook ch. 5).",
            labels=["slo", "severity"],
        )
        for status in book.statuses():
            name = status.spec.name
            objective.add_metric([name], status.spec.objective / 100.0)
            for window in status.windows:
                burn.add_metric([name, format_duration(window.seconds)], window.burn_rate)
            remaining.add_metric([name], status.budget_remaining)
            for severity in dict.fromkeys(a.alert.severity for a in status.alerts):
                alert.add_metric([name, severity], 1.0 if severity in status.firing else 0.0)
        return [objective, burn, remaining, alert]
