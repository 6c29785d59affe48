"""The judge on seeded synthetic windows: each verdict path, with the evidence it keeps."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from headway.rollout import (
    AnalysisResult,
    AnalysisSpec,
    Direction,
    MetricKind,
    MetricSpec,
    MetricVerdict,
    NoDataPolicy,
    SideWindow,
    SplitWindow,
    Verdict,
    judge,
)


def side(
    rng: np.random.Generator,
    n: int,
    *,
    error: float = 0.005,
    median: float = 0.8,
    sigma: float = 0.5,
) -> SideWindow:
    errors = int(rng.binomial(n, error))
    ok = n - errors
    return SideWindow(
        n,
        errors,
        list(rng.lognormal(math.log(median), sigma, ok)),
        list(rng.lognormal(math.log(median / 4), sigma, ok)),
    )


def window(stable: SideWindow, canary: SideWindow) -> SplitWindow:
    return SplitWindow(0.0, 60.0, 5.0, stable, canary)


def test_identical_distributions_pass() -> None:
    rng = np.random.default_rng(1)
    result = judge(AnalysisSpec(), window(side(rng, 3000), side(rng, 300)))
    assert result.verdict is Verdict.PASS
    assert result.score == 100.0
    assert {m.verdict for m in result.metrics} == {MetricVerdict.PASS}


def test_a_3x_p99_with_the_same_median_fails_on_the_tail_not_the_median() -> None:
    rng = np.random.default_rng(2)
    tail_sigma = 0.5 + math.log(3) / 2.326  # p99 three times the baseline's, same median
    result = judge(AnalysisSpec(), window(side(rng, 3000), side(rng, 600, sigma=tail_sigma)))
    latency = result.metric("latency")
    assert latency.verdict is MetricVerdict.FAIL
    assert "tail tolerance" in latency.reason
    assert latency.measured["p_value"] is not None
    assert latency.measured["p_value"] > 0.01
    assert latency.measured["tail_ratio_lower"] is not None
    assert latency.measured["tail_ratio_lower"] > latency.thresholds["tail_tolerance"]  # type: ignore[operator]
    assert result.verdict is Verdict.FAIL


def test_a_slower_canary_fails_on_the_shift_with_its_interval() -> None:
    rng = np.random.default_rng(3)
    result = judge(AnalysisSpec(), window(side(rng, 3000), side(rng, 300, median=1.2)))
    latency = result.metric("latency")
    assert latency.verdict is MetricVerdict.FAIL
    lower, allowance = latency.measured["shift_lower"], latency.thresholds["allowance"]
    assert lower is not None
    assert allowance is not None
    assert lower > allowance
    assert result.verdict is Verdict.FAIL


def test_a_critical_failure_fails_the_analysis_whatever_the_score() -> None:
    rng = np.random.default_rng(4)
    data = window(side(rng, 3000), side(rng, 300, error=0.2))

    def spec(critical: bool) -> AnalysisSpec:
        return AnalysisSpec(
            metrics=(
                MetricSpec(name="errors", kind=MetricKind.ERROR_RATE, critical=critical),
                MetricSpec(name="latency", kind=MetricKind.LATENCY, weight=99),
            )
        )

    critical = judge(spec(True), data)
    assert critical.verdict is Verdict.FAIL
    assert critical.score == 0.0
    assert "critical metric failed: errors" in critical.reason
    # The same data with errors not critical: the weighted score (99 of 100) passes.
    plain = judge(spec(False), data)
    assert plain.metric("errors").verdict is MetricVerdict.FAIL
    assert plain.score == pytest.approx(99.0)
    assert plain.verdict is Verdict.PASS


def test_too_few_samples_is_inconclusive_never_pass() -> None:
    rng = np.random.default_rng(5)
    result = judge(AnalysisSpec(), window(side(rng, 3000), side(rng, 20)))
    assert result.verdict is Verdict.INCONCLUSIVE
    for metric in result.metrics:
        assert metric.verdict is MetricVerdict.NODATA
        assert metric.scored_as is None
        assert "too little data" in metric.reason
    assert result.score is None


@pytest.mark.parametrize(
    ("policy", "critical", "verdict", "score"),
    [
        (NoDataPolicy.PASS, False, Verdict.PASS, 100.0),
        (NoDataPolicy.FAIL, False, Verdict.MARGINAL, 75.0),
        (NoDataPolicy.FAIL, True, Verdict.FAIL, 0.0),
        (NoDataPolicy.INCONCLUSIVE, False, Verdict.INCONCLUSIVE, 100.0),
    ],
)
def test_no_data_policies(
    policy: NoDataPolicy, critical: bool, verdict: Verdict, score: float
) -> None:
    rng = np.random.default_rng(6)
    # ttft has no samples at all on either side; three other metrics have plenty and pass.
    stable, canary = side(rng, 3000), side(rng, 300)
    stable = SideWindow(stable.requests, stable.errors, stable.latencies, [])
    canary = SideWindow(canary.requests, canary.errors, canary.latencies, [])
    spec = AnalysisSpec(
        metrics=(
            MetricSpec(name="errors", kind=MetricKind.ERROR_RATE),
            MetricSpec(name="latency", kind=MetricKind.LATENCY),
            MetricSpec(name="latency2", kind=MetricKind.LATENCY),
            MetricSpec(name="ttft", kind=MetricKind.TTFT, no_data=policy, critical=critical),
        )
    )
    result = judge(spec, window(stable, canary))
    assert result.metric("ttft").verdict is MetricVerdict.NODATA
    assert result.verdict is verdict
    assert result.score == pytest.approx(score)


def test_significant_but_tolerated_is_marginal() -> None:
    rng = np.random.default_rng(7)
    data = window(side(rng, 3000, error=0.005), side(rng, 600, error=0.05))
    spec = AnalysisSpec(
        metrics=(
            MetricSpec(name="errors", kind=MetricKind.ERROR_RATE, tolerance=0.2),
            MetricSpec(name="latency", kind=MetricKind.LATENCY),
        )
    )
    result = judge(spec, data)
    errors = result.metric("errors")
    assert errors.verdict is MetricVerdict.MARGINAL
    assert "within tolerance" in errors.reason
    assert result.score == pytest.approx(75.0)
    assert result.verdict is Verdict.MARGINAL


def test_direction_decides_which_change_is_a_regression() -> None:
    rng = np.random.default_rng(8)
    data = window(side(rng, 3000), side(rng, 300, median=0.5))  # the canary is faster

    def verdict(direction: Direction) -> MetricVerdict:
        spec = AnalysisSpec(
            metrics=(MetricSpec(name="latency", kind=MetricKind.LATENCY, direction=direction),)
        )
        return judge(spec, data).metric("latency").verdict

    assert verdict(Direction.INCREASE) is MetricVerdict.PASS
    assert verdict(Direction.DECREASE) is MetricVerdict.FAIL
    assert verdict(Direction.EITHER) is MetricVerdict.FAIL


def test_result_round_trips_through_strict_json() -> None:
    rng = np.random.default_rng(9)
    # Small samples: an unbounded interval, which strict JSON cannot hold as infinity.
    spec = AnalysisSpec(
        metrics=(MetricSpec(name="latency", kind=MetricKind.LATENCY, min_samples=1),)
    )
    result = judge(spec, window(side(rng, 2, error=0), side(rng, 1, error=0)))
    text = json.dumps(result.to_dict(), allow_nan=False)
    again = AnalysisResult.from_dict(json.loads(text))
    assert again.metric("latency").measured["shift_lower"] is None
    assert again.to_dict() == result.to_dict()
    assert again.verdict is result.verdict
