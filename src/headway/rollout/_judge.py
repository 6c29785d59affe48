"""The canary judge: classify each metric, score the set, and say why.

The idea is Kayenta's (Spinnaker's NetflixACAJudge): every metric is classified on its own by a
statistical test plus an effect-size allowance, and a weighted score over the classifications
decides, with critical metrics able to fail the whole analysis. What differs here:

- error rates get a one-sided two-proportion test (``proportion_test``), latencies a Mann-Whitney
  U test with a Hodges-Lehmann shift and a tolerance relative to the baseline median, plus a
  tail-quantile check (a rank test misses a canary whose median is unchanged but whose p99 grew);
- a metric fails only when the change is significant (p < alpha) AND its confidence bound
  clears the tolerance; significant with only the point estimate past the tolerance is
  ``marginal`` (half credit); too few samples is ``nodata``, scored by the metric's policy;
- the result is ``inconclusive`` (never pass) while any metric lacks data under the
  ``inconclusive`` policy, and ``fail`` (score 0) when a critical metric fails, as in Kayenta's
  ``WeightedSumScorer.criticalFailures``. Otherwise score = 100 * sum(weight * credit) /
  sum(weight) with credit pass 1, marginal 0.5, fail 0, classified against ``pass_score`` and
  ``marginal_score`` (Kayenta's ThresholdScoreClassifier).

Pure: a ``SplitWindow`` (both sides over the same span) in, an ``AnalysisResult`` (every
measured value, threshold and reason) out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from ._spec import AnalysisSpec, Direction, MetricKind, MetricSpec, NoDataPolicy
from ._stats import hodges_lehmann, mann_whitney, proportion_test, quantile_ratio
from ._window import SideWindow, SplitWindow

__all__ = ["AnalysisResult", "MetricResult", "MetricVerdict", "Verdict", "judge"]


class MetricVerdict(StrEnum):
    PASS = "pass"
    MARGINAL = "marginal"
    FAIL = "fail"
    NODATA = "nodata"


class Verdict(StrEnum):
    PASS = "pass"
    MARGINAL = "marginal"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


_CREDIT = {MetricVerdict.PASS: 1.0, MetricVerdict.MARGINAL: 0.5, MetricVerdict.FAIL: 0.0}
_RANK = {MetricVerdict.PASS: 0, MetricVerdict.MARGINAL: 1, MetricVerdict.FAIL: 2}

Numbers = Mapping[str, float | None]


def _finite(value: float | None) -> float | None:
    """JSON has no infinity: an unbounded value is stored as null."""
    return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class MetricResult:
    """One metric's classification with the numbers behind it."""

    name: str
    kind: str
    verdict: MetricVerdict
    reason: str
    critical: bool
    weight: float
    canary_count: int
    baseline_count: int
    #: What the verdict counts as in the score: the verdict itself, or the no-data policy's
    #: pass/fail; ``None`` for no data under the inconclusive policy (not scored).
    scored_as: MetricVerdict | None
    measured: Numbers = field(default_factory=dict)
    thresholds: Numbers = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "critical": self.critical,
            "weight": self.weight,
            "canary_count": self.canary_count,
            "baseline_count": self.baseline_count,
            "scored_as": self.scored_as.value if self.scored_as is not None else None,
            "measured": {k: _finite(v) for k, v in self.measured.items()},
            "thresholds": {k: _finite(v) for k, v in self.thresholds.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricResult:
        scored = data.get("scored_as")
        return cls(
            name=data["name"],
            kind=data["kind"],
            verdict=MetricVerdict(data["verdict"]),
            reason=data["reason"],
            critical=bool(data["critical"]),
            weight=float(data["weight"]),
            canary_count=int(data["canary_count"]),
            baseline_count=int(data["baseline_count"]),
            scored_as=MetricVerdict(scored) if scored is not None else None,
            measured=dict(data.get("measured", {})),
            thresholds=dict(data.get("thresholds", {})),
        )


@dataclass(frozen=True, slots=True)
class AnalysisResult:
    """One window's verdict: the evidence a decision is recorded with."""

    verdict: Verdict
    #: 0-100, or None when nothing could be scored.
    score: float | None
    reason: str
    metrics: tuple[MetricResult, ...]
    start: float
    end: float
    pass_score: float
    marginal_score: float
    stable: Mapping[str, Any] = field(default_factory=dict)
    canary: Mapping[str, Any] = field(default_factory=dict)

    def metric(self, name: str) -> MetricResult:
        for result in self.metrics:
            if result.name == name:
                return result
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "score": self.score,
            "reason": self.reason,
            "metrics": [metric.to_dict() for metric in self.metrics],
            "start": self.start,
            "end": self.end,
            "pass_score": self.pass_score,
            "marginal_score": self.marginal_score,
            "stable": dict(self.stable),
            "canary": dict(self.canary),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnalysisResult:
        return cls(
            verdict=Verdict(data["verdict"]),
            score=data["score"],
            reason=data["reason"],
            metrics=tuple(MetricResult.from_dict(m) for m in data["metrics"]),
            start=float(data["start"]),
            end=float(data["end"]),
            pass_score=float(data["pass_score"]),
            marginal_score=float(data["marginal_score"]),
            stable=dict(data.get("stable", {})),
            canary=dict(data.get("canary", {})),
        )


@dataclass(frozen=True, slots=True)
class _Finding:
    verdict: MetricVerdict
    reason: str
    measured: dict[str, float | None]
    thresholds: dict[str, float | None]


def _pct(rate: float) -> str:
    return f"{rate * 100:.2f}%"


def _error_side(worse: SideWindow, other: SideWindow, spec: MetricSpec, alpha: float) -> _Finding:
    """Is ``worse``'s error rate significantly above ``other``'s by more than the tolerance?"""
    test = proportion_test(worse.errors, worse.requests, other.errors, other.requests)
    diff = test.canary_rate - test.baseline_rate
    tolerance = spec.effective_tolerance
    measured: dict[str, float | None] = {
        "rate_a": test.canary_rate,
        "rate_b": test.baseline_rate,
        "difference": diff,
        "p_value": test.p_value,
    }
    thresholds: dict[str, float | None] = {"alpha": alpha, "tolerance": tolerance}
    rates = (
        f"{_pct(test.canary_rate)} ({worse.errors}/{worse.requests}) vs "
        f"{_pct(test.baseline_rate)} ({other.errors}/{other.requests})"
    )
    significance = f"p={test.p_value:.2g} ({test.method})"
    if test.p_value < alpha and diff > tolerance:
        return _Finding(
            MetricVerdict.FAIL,
            f"{rates}: +{diff * 100:.2f} pts > tolerance {tolerance * 100:.2f} pts, "
            f"{significance} < {alpha:g}",
            measured,
            thresholds,
        )
    if test.p_value < alpha:
        return _Finding(
            MetricVerdict.MARGINAL,
            f"{rates}: significantly worse ({significance}) but within tolerance "
            f"{tolerance * 100:.2f} pts",
            measured,
            thresholds,
        )
    return _Finding(
        MetricVerdict.PASS,
        f"{rates}: no significant increase ({significance})",
        measured,
        thresholds,
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if math.isfinite(seconds) else "unbounded"


def _timing_side(
    worse: Sequence[float], other: Sequence[float], spec: MetricSpec, alpha: float, tail: bool
) -> _Finding:
    """Is ``worse`` shifted above ``other`` beyond the tolerance, or is its tail heavier?"""
    a = np.asarray(worse, dtype=np.float64)
    b = np.asarray(other, dtype=np.float64)
    median_b = float(np.median(b))
    allowance = spec.effective_tolerance * median_b
    test = mann_whitney(a, b, alternative="greater")
    shift = hodges_lehmann(a, b, confidence=1.0 - 2.0 * alpha)
    measured: dict[str, float | None] = {
        "median_a": float(np.median(a)),
        "median_b": median_b,
        "shift": shift.estimate,
        "shift_lower": shift.lower,
        "shift_upper": shift.upper,
        "p_value": test.p_value,
    }
    thresholds: dict[str, float | None] = {
        "alpha": alpha,
        "tolerance": spec.effective_tolerance,
        "allowance": allowance,
    }
    medians = f"median {_ms(float(np.median(a)))} vs {_ms(median_b)}"
    interval = f"shift {_ms(shift.estimate)} ({shift.confidence * 100:.4g}% CI {_ms(shift.lower)}.."
    interval += f"{_ms(shift.upper)})"
    significant = test.p_value < alpha
    if significant and shift.lower > allowance:
        verdict = MetricVerdict.FAIL
        reason = f"{medians}: {interval} above allowance {_ms(allowance)}, p={test.p_value:.2g}"
    elif significant and shift.estimate > allowance:
        verdict = MetricVerdict.MARGINAL
        reason = (
            f"{medians}: {interval}, estimate above allowance {_ms(allowance)} but the interval "
            f"is not, p={test.p_value:.2g}"
        )
    else:
        verdict = MetricVerdict.PASS
        reason = f"{medians}: {interval} within allowance {_ms(allowance)}, p={test.p_value:.2g}"
    if tail and spec.tail_quantile is not None:
        q = spec.tail_quantile
        ratio = quantile_ratio(a, b, quantile=q, confidence=1.0 - alpha)
        label = f"p{q * 100:g}"
        measured.update(
            {
                "tail_a": ratio.canary,
                "tail_b": ratio.baseline,
                "tail_ratio": ratio.ratio,
                "tail_ratio_lower": ratio.ratio_lower,
            }
        )
        thresholds.update({"tail_quantile": q, "tail_tolerance": spec.tail_tolerance})
        bound = "unbounded" if ratio.ratio_lower is None else f">= {ratio.ratio_lower:.2f}x"
        tail_text = (
            f"{label} {_ms(ratio.canary)} vs {_ms(ratio.baseline)} = {ratio.ratio:.2f}x "
            f"({bound} at {(1 - alpha) * 100:.4g}%)"
        )
        if ratio.ratio_lower is not None and ratio.ratio_lower > spec.tail_tolerance:
            verdict = MetricVerdict.FAIL
            reason = f"{tail_text} > tail tolerance {spec.tail_tolerance:g}x; {reason}"
        else:
            reason = f"{reason}; {tail_text}"
    return _Finding(verdict, reason, measured, thresholds)


def _counts(spec: MetricSpec, window: SplitWindow) -> tuple[int, int]:
    canary, stable = window.canary, window.stable
    if spec.kind is MetricKind.ERROR_RATE:
        return canary.requests, stable.requests
    if spec.kind is MetricKind.LATENCY:
        return len(canary.latencies), len(stable.latencies)
    return len(canary.ttfts), len(stable.ttfts)


def _find(spec: MetricSpec, window: SplitWindow, alpha: float) -> _Finding:
    canary, stable = window.canary, window.stable
    up = spec.direction in (Direction.INCREASE, Direction.EITHER)
    down = spec.direction in (Direction.DECREASE, Direction.EITHER)
    findings: list[_Finding] = []
    if spec.kind is MetricKind.ERROR_RATE:
        if up:
            findings.append(_error_side(canary, stable, spec, alpha))
        if down:
            findings.append(_error_side(stable, canary, spec, alpha))
    else:
        a = canary.latencies if spec.kind is MetricKind.LATENCY else canary.ttfts
        b = stable.latencies if spec.kind is MetricKind.LATENCY else stable.ttfts
        if up:  # the tail check only looks for a heavier canary tail
            findings.append(_timing_side(a, b, spec, alpha, tail=True))
        if down:
            findings.append(_timing_side(b, a, spec, alpha, tail=False))
    return max(findings, key=lambda f: _RANK[f.verdict])


_NO_DATA_SCORE = {
    NoDataPolicy.PASS: MetricVerdict.PASS,
    NoDataPolicy.FAIL: MetricVerdict.FAIL,
    NoDataPolicy.INCONCLUSIVE: None,
}


def _classify(spec: MetricSpec, window: SplitWindow, alpha: float) -> MetricResult:
    n_canary, n_stable = _counts(spec, window)
    if min(n_canary, n_stable) < spec.min_samples:
        verdict = MetricVerdict.NODATA
        scored_as = _NO_DATA_SCORE[spec.no_data]
        reason = (
            f"too little data: canary {n_canary}, baseline {n_stable} samples, need "
            f"{spec.min_samples} each (no-data policy: {spec.no_data.value})"
        )
        measured: dict[str, float | None] = {}
        thresholds: dict[str, float | None] = {}
    else:
        finding = _find(spec, window, alpha)
        verdict = scored_as = finding.verdict
        reason, measured, thresholds = finding.reason, finding.measured, finding.thresholds
    return MetricResult(
        name=spec.name,
        kind=spec.kind.value,
        verdict=verdict,
        reason=reason,
        critical=spec.critical,
        weight=spec.weight,
        canary_count=n_canary,
        baseline_count=n_stable,
        scored_as=scored_as,
        measured=measured,
        thresholds={**thresholds, "min_samples": float(spec.min_samples)},
    )


def _summary(side: SideWindow) -> dict[str, Any]:
    return {
        "requests": side.requests,
        "errors": side.errors,
        "latencies": len(side.latencies),
        "ttfts": len(side.ttfts),
    }


def judge(spec: AnalysisSpec, window: SplitWindow) -> AnalysisResult:
    """Compare the canary with the concurrent baseline of one window."""
    results = tuple(_classify(metric, window, spec.alpha) for metric in spec.metrics)
    scored = [r for r in results if r.scored_as is not None]
    total_weight = sum(r.weight for r in scored)
    score = (
        100.0 * sum(r.weight * _CREDIT[r.scored_as] for r in scored if r.scored_as) / total_weight
        if total_weight > 0
        else None
    )
    critical = [r.name for r in results if r.critical and r.scored_as is MetricVerdict.FAIL]
    waiting = [r.name for r in results if r.scored_as is None]
    if critical:
        verdict, score = Verdict.FAIL, 0.0
        reason = f"critical metric failed: {', '.join(critical)}"
    elif waiting:
        verdict = Verdict.INCONCLUSIVE
        reason = f"too little data for {', '.join(waiting)}"
    else:
        assert score is not None  # every metric was scored
        failed = [r.name for r in results if r.scored_as is not MetricVerdict.PASS]
        detail = f" (not passing: {', '.join(failed)})" if failed else ""
        if score >= spec.pass_score:
            verdict = Verdict.PASS
            reason = f"score {score:.0f} >= pass {spec.pass_score:g}{detail}"
        elif score >= spec.marginal_score:
            verdict = Verdict.MARGINAL
            reason = f"score {score:.0f} >= marginal {spec.marginal_score:g}{detail}"
        else:
            verdict = Verdict.FAIL
            reason = f"score {score:.0f} < marginal {spec.marginal_score:g}{detail}"
    return AnalysisResult(
        verdict=verdict,
        score=score,
        reason=reason,
        metrics=results,
        start=window.start,
        end=window.end,
        pass_score=spec.pass_score,
        marginal_score=spec.marginal_score,
        stable=_summary(window.stable),
        canary=_summary(window.canary),
    )
