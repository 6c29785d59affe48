"""Rollouts, canary splits and shadow traffic as Prometheus metrics, computed at scrape time.

Series (prefix ``headway_``)::

    rollout_phase{model,phase}                        1 for the rollout's phase, 0 for the others
    rollout_weight_percent{model}                     canary weight the controller sets
    rollout_step{model}                               index of the current step
    rollout_decisions_total{model,action}             decisions recorded (start, analysis, abort...)
    rollout_analyses_total{model,verdict}             analyses judged, by verdict
    rollout_analysis_score{model}                     the last analysis' score (0-100)
    rollout_metric_verdict{model,metric,verdict}      1 for each metric's last verdict
    rollout_metric_value{model,metric,value}          what the last analysis measured
    rollout_metric_threshold{model,metric,threshold}  what it compared against
    split_weight_percent{model}                       live canary weight of the split
    split_requests_total{model,side}                  requests finished per side
    split_errors_total{model,side}                    of those, failed
    split_fallbacks_total{model}                      failed canary requests served on stable
    shadow_mirrored_total{model}                      requests mirrored to the candidate
    shadow_diff_rate{model,against,dimension}         share of compared pairs that differed
    shadow_relative_diff_rate{model,dimension}        candidate minus noise floor

Nothing is pushed from the request path: everything is read from the controllers' decisions
and the live runtime's splits and shadows when Prometheus asks. Counters restart with a new
rollout (or a new split after a reload that changed it); ``rate()`` handles resets.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from headway.rollout import Phase

from ._rollouts import RolloutManager

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["RolloutCollector"]


class RolloutCollector(Collector):
    """Reads ``manager`` and ``runtime()`` (the live one, or None while starting) per scrape."""

    def __init__(
        self,
        manager: RolloutManager,
        runtime: Callable[[], Runtime | None],
        *,
        prefix: str = "headway",
    ) -> None:
        self._manager = manager
        self._runtime = runtime
        self._p = prefix

    def describe(self) -> Iterable[Metric]:
        return ()  # which series exist depends on the config and rollouts at scrape time

    def collect(self) -> Iterable[Metric]:
        out = self._rollouts()
        runtime = self._runtime()
        if runtime is not None:
            out.extend(self._splits(runtime))
            out.extend(self._shadows(runtime))
        return out

    def _gauge(self, name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"{self._p}_{name}", doc, labels=labels)

    def _counter(self, name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
        return CounterMetricFamily(f"{self._p}_{name}", doc, labels=labels)

    def _rollouts(self) -> list[Metric]:
        controllers = self._manager.controllers()
        if not controllers:
            return []
        phase = self._gauge(
            "rollout_phase", "1 for the rollout's current phase.", ["model", "phase"]
        )
        weight = self._gauge(
            "rollout_weight_percent", "Canary weight the rollout sets (percent).", ["model"]
        )
        step = self._gauge("rollout_step", "Index of the rollout's current step.", ["model"])
        decisions = self._counter(
            "rollout_decisions", "Decisions the rollout recorded, by action.", ["model", "action"]
        )
        analyses = self._counter(
            "rollout_analyses", "Canary analyses judged, by verdict.", ["model", "verdict"]
        )
        score = self._gauge("rollout_analysis_score", "Score of the last analysis.", ["model"])
        verdict = self._gauge(
            "rollout_metric_verdict",
            "1 for each metric's verdict in the last analysis.",
            ["model", "metric", "verdict"],
        )
        value = self._gauge(
            "rollout_metric_value",
            "What the last analysis measured per metric (rates, seconds, p-values, ratios).",
            ["model", "metric", "value"],
        )
        threshold = self._gauge(
            "rollout_metric_threshold",
            "What the last analysis compared each metric against.",
            ["model", "metric", "threshold"],
        )
        for model, c in controllers:
            for p in Phase:
                phase.add_metric([model, p.value], 1.0 if c.phase is p else 0.0)
            weight.add_metric([model], float(c.current_weight()))
            step.add_metric([model], float(c.step_index))
            actions = Counter(d.action.value for d in c.decisions)
            for action, count in sorted(actions.items()):
                decisions.add_metric([model, action], float(count))
            verdicts = Counter(d.analysis.verdict.value for d in c.decisions if d.analysis)
            for name, count in sorted(verdicts.items()):
                analyses.add_metric([model, name], float(count))
            last = c.last_analysis()
            if last is None:
                continue
            if last.score is not None:
                score.add_metric([model], last.score)
            for metric in last.metrics:
                verdict.add_metric([model, metric.name, metric.verdict.value], 1.0)
                for key, number in metric.measured.items():
                    if number is not None:
                        value.add_metric([model, metric.name, key], number)
                for key, number in metric.thresholds.items():
                    if number is not None:
                        threshold.add_metric([model, metric.name, key], number)
        return [phase, weight, step, decisions, analyses, score, verdict, value, threshold]

    def _splits(self, runtime: Runtime) -> list[Metric]:
        if not runtime.splits:
            return []
        weight = self._gauge("split_weight_percent", "Live canary weight (percent).", ["model"])
        requests = self._counter(
            "split_requests", "Requests finished per side of the split.", ["model", "side"]
        )
        errors = self._counter("split_errors", "Failed requests per side.", ["model", "side"])
        fallbacks = self._counter(
            "split_fallbacks", "Failed canary requests served on stable instead.", ["model"]
        )
        for model, split in runtime.splits.items():
            snap = split.snapshot()
            weight.add_metric([model], float(snap["weight"]))
            for side, count in snap["requests"].items():
                requests.add_metric([model, side], float(count))
            for side, count in snap["errors"].items():
                errors.add_metric([model, side], float(count))
            fallbacks.add_metric([model], float(snap["fallbacks"]))
        return [weight, requests, errors, fallbacks]

    def _shadows(self, runtime: Runtime) -> list[Metric]:
        if not runtime.shadows:
            return []
        mirrored = self._counter(
            "shadow_mirrored", "Requests mirrored to the candidate pool.", ["model"]
        )
        rates = self._gauge(
            "shadow_diff_rate",
            "Share of compared answers that differed, against the candidate or the noise pool.",
            ["model", "against", "dimension"],
        )
        relative = self._gauge(
            "shadow_relative_diff_rate",
            "Candidate diff rate minus the stable-vs-stable noise floor.",
            ["model", "dimension"],
        )
        for model, shadow in runtime.shadows.items():
            snap = shadow.snapshot()
            mirrored.add_metric([model], float(snap["mirrored"]))
            for against in ("candidate", "noise"):
                counters = snap[against]
                if counters is None:
                    continue
                for dimension, rate in counters["diff_rates"].items():
                    if rate is not None:
                        rates.add_metric([model, against, dimension], rate)
            for dimension, rate in (snap["relative_diff_rates"] or {}).items():
                if rate is not None:
                    relative.add_metric([model, dimension], rate)
        return [mirrored, rates, relative]
