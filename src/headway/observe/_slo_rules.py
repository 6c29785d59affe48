"""Prometheus recording and alerting rules for configured SLOs (``headway slo rules CONFIG``).

The rules follow the Google SRE workbook, ch. 5 "Alerting on SLOs", "Multiwindow,
Multi-Burn-Rate Alerts": one recording rule per SLO and window for the error ratio,
``headway:slo_errors_per_request:ratio_rate<window>{slo=...}``, then one alerting rule per
window pair that fires while both ratios are at or above ``burn_rate x (1 - objective)``.

They are written over the gateway's own metrics (``GatewayMetrics``), so Prometheus evaluates
the counters merged across every worker and instance:

- availability: ``headway_requests_total`` has route, model and status labels, so the rule is
  exactly the gateway's definition: 5xx over every status but 4xx.
- latency: the ratio of answers above ``threshold`` from the ``_bucket{le="threshold"}`` and
  ``_count`` series of ``headway_request_duration_seconds`` (``latency_of: total``) or
  ``headway_time_to_first_token_seconds`` (``ttft``). The threshold must be a bucket bound
  (``LLM_BUCKETS``; the config enforces it), else the count would be interpolated. These
  histograms carry no route or status label (and TTFT is observed for streams only), so the rule
  can differ from the gateway's own evaluation; :func:`rule_caveats` says how, and the rule's
  ``sli_caveat`` annotation repeats it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client.utils import floatToGoString

from ._buckets import LLM_BUCKETS
from ._duration import format_duration
from ._slo import BurnAlert, SloSpec

__all__ = ["ALERT_NAME", "prometheus_rules", "recorded_ratio", "rule_caveats"]

#: The alerting rules' name; ``slo``, ``severity`` and the windows are labels.
ALERT_NAME = "HeadwaySLOErrorBudgetBurn"
_RATIO = "slo_errors_per_request:ratio_rate"


def recorded_ratio(window: float, prefix: str = "headway") -> str:
    """The recording rule name of the error ratio over ``window`` seconds."""
    return f"{prefix}:{_RATIO}{format_duration(window)}"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _selector(matchers: Sequence[tuple[str, str, str]]) -> str:
    return "{" + ",".join(f"{k}{op}{_quote(v)}" for k, op, v in matchers) + "}"


def _ratio_expr(spec: SloSpec, window: float, prefix: str) -> str:
    w = format_duration(window)
    if spec.kind == "availability":
        base: list[tuple[str, str, str]] = []
        if spec.route is not None:
            base.append(("route", "=", spec.route))
        if spec.model is not None:
            base.append(("model", "=", spec.model))
        metric = f"{prefix}_requests_total"
        bad = _selector([*base, ("status", "=~", "5..")])
        valid = _selector([*base, ("status", "!~", "4..")])
        return f"sum(rate({metric}{bad}[{w}]))\n/\nsum(rate({metric}{valid}[{w}]))"
    threshold = spec.threshold
    if threshold is None or threshold not in LLM_BUCKETS:
        raise ValueError(
            f"SLO {spec.name!r}: threshold {threshold} is not a latency histogram bucket bound"
        )
    histogram = (
        f"{prefix}_time_to_first_token_seconds"
        if spec.latency_of == "ttft"
        else f"{prefix}_request_duration_seconds"
    )
    model = [("model", "=", spec.model)] if spec.model is not None else []
    # The ``le`` value exactly as prometheus_client writes the bucket bound.
    le: str = floatToGoString(threshold)  # type: ignore[no-untyped-call]
    fast = _selector([*model, ("le", "=", le)])
    every = _selector(model) if model else ""
    return (
        f"1 - (\n  sum(rate({histogram}_bucket{fast}[{w}]))\n  /\n"
        f"  sum(rate({histogram}_count{every}[{w}]))\n)"
    )


def rule_caveats(spec: SloSpec) -> list[str]:
    """Where the Prometheus rule's SLI differs from the gateway's own evaluation, in words."""
    if spec.kind == "availability":
        return []
    what = (
        "time_to_first_token_seconds is observed for streamed answers only (the gateway also "
        "counts non-streamed answers, at their whole latency)"
        if spec.latency_of == "ttft"
        else "request_duration_seconds counts every answered request, refusals and failures "
        "included (the gateway counts successful answers only)"
    )
    out = [f"the latency histogram has no status label: {what}"]
    if spec.route is not None:
        out.append(
            f"the latency histogram has no route label: the rule covers every route, "
            f"the gateway only '{spec.route}'"
        )
    return out


def _alert_rule(spec: SloSpec, alert: BurnAlert, prefix: str) -> dict[str, Any]:
    budget = format(spec.budget, ".10g")
    limit = f"({format(alert.burn_rate, 'g')} * {budget})"
    slo = _selector([("slo", "=", spec.name)])
    long, short = format_duration(alert.long_window), format_duration(alert.short_window)
    expr = (
        f"{recorded_ratio(alert.long_window, prefix)}{slo} >= {limit}\nand\n"
        f"{recorded_ratio(alert.short_window, prefix)}{slo} >= {limit}"
    )
    spent = alert.burn_rate * alert.long_window / spec.window
    annotations = {
        "summary": (
            f"SLO {spec.name} ({spec.objective:g}% {spec.kind}) is burning its error budget "
            f"at {alert.burn_rate:g}x or faster over {long} and {short}"
        ),
        "description": (
            f"Error ratio over {long}: {{{{ $value | humanizePercentage }}}} (budget "
            f"{spec.budget * 100:.6g}%). At this rate {spent:.0%} of the "
            f"{format_duration(spec.window)} error budget is spent in {long}."
        ),
    }
    caveats = rule_caveats(spec)
    if caveats:
        annotations["sli_caveat"] = "; ".join(caveats)
    rule: dict[str, Any] = {"alert": ALERT_NAME, "expr": expr}
    if alert.for_seconds > 0:
        rule["for"] = format_duration(alert.for_seconds)
    rule["labels"] = {
        "severity": alert.severity,
        "slo": spec.name,
        "long_window": long,
        "short_window": short,
    }
    rule["annotations"] = annotations
    return rule


def prometheus_rules(specs: Sequence[SloSpec], *, prefix: str = "headway") -> dict[str, Any]:
    """A Prometheus rule file (as data: dump it as YAML): one group per SLO, recording rules
    for its windows' error ratios first, then its alerting rules (a group evaluates in order)."""
    groups = []
    for spec in specs:
        rules: list[dict[str, Any]] = [
            {
                "record": recorded_ratio(window, prefix),
                "expr": _ratio_expr(spec, window, prefix),
                "labels": {"slo": spec.name},
            }
            for window in spec.windows
        ]
        rules.extend(_alert_rule(spec, alert, prefix) for alert in spec.alerts)
        groups.append({"name": f"{prefix}-slo-{spec.name}", "rules": rules})
    return {"groups": groups}
