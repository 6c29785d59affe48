"""The canary statistics against scipy (test-only reference) and textbook values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from headway.rollout import hodges_lehmann, mann_whitney, proportion_test, quantile_ratio

# -- two proportions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ce", "cn", "be", "bn"),
    [(3, 50, 2, 1000), (0, 10, 0, 10), (5, 20, 1, 30), (1, 75, 7, 1425), (10, 60, 4, 2000)],
)
def test_small_counts_use_fisher_exact_like_scipy(ce: int, cn: int, be: int, bn: int) -> None:
    result = proportion_test(ce, cn, be, bn)
    assert result.method == "fisher"
    expected = stats.fisher_exact([[ce, cn - ce], [be, bn - be]], alternative="greater").pvalue
    assert result.p_value == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_large_counts_use_pooled_z_with_yates_correction() -> None:
    ce, cn, be, bn = 60, 500, 80, 1000
    result = proportion_test(ce, cn, be, bn)
    assert result.method == "z"
    # For a 2x2 table, Yates' chi-square is the square of the continuity-corrected pooled z.
    chi2, p_two_sided, _, _ = stats.chi2_contingency(
        [[ce, cn - ce], [be, bn - be]], correction=True
    )
    assert result.z is not None
    assert result.z**2 == pytest.approx(chi2, rel=1e-9)
    assert result.p_value == pytest.approx(p_two_sided / 2, rel=1e-9)
    assert result.p_value == pytest.approx(stats.norm.sf(result.z), rel=1e-12)


def test_a_better_canary_is_not_significant_and_no_traffic_proves_nothing() -> None:
    assert proportion_test(1, 1000, 50, 1000).p_value > 0.99
    assert proportion_test(0, 0, 5, 100).p_value == 1.0
    assert proportion_test(0, 0, 5, 100).method == "none"


@pytest.mark.parametrize("args", [(-1, 10, 0, 10), (11, 10, 0, 10), (0, 10, 5, 4)])
def test_impossible_counts_are_rejected(args: tuple[int, int, int, int]) -> None:
    with pytest.raises(ValueError):
        proportion_test(*args)


# -- Mann-Whitney ------------------------------------------------------------------------------


def test_exact_distribution_textbook_value() -> None:
    # n1 = n2 = 3: C(6, 3) = 20 orderings; U = 9 only when every canary value is larger.
    result = mann_whitney([4.0, 5.0, 6.0], [1.0, 2.0, 3.0])
    assert result.method == "exact"
    assert result.u == 9
    assert result.p_value == pytest.approx(1 / 20)


@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
@pytest.mark.parametrize(("n1", "n2"), [(5, 7), (12, 9), (40, 50)])
def test_exact_matches_scipy(alternative: str, n1: int, n2: int) -> None:
    rng = np.random.default_rng(n1 * n2)
    x, y = rng.normal(0.4, 1, n1), rng.normal(0, 1, n2)
    ours = mann_whitney(x, y, alternative=alternative)  # type: ignore[arg-type]
    ref = stats.mannwhitneyu(x, y, alternative=alternative, method="exact")
    assert ours.method == "exact"
    assert ours.u == ref.statistic
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-9)


@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
def test_asymptotic_with_ties_matches_scipy(alternative: str) -> None:
    rng = np.random.default_rng(7)
    x = np.round(rng.lognormal(0.1, 0.5, 300), 1)  # rounding makes many ties
    y = np.round(rng.lognormal(0.0, 0.5, 800), 1)
    ours = mann_whitney(x, y, alternative=alternative)  # type: ignore[arg-type]
    ref = stats.mannwhitneyu(x, y, alternative=alternative, method="asymptotic")
    assert ours.method == "asymptotic"
    assert ours.u == ref.statistic
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-9)


def test_all_values_equal_is_no_evidence() -> None:
    result = mann_whitney([1.0] * 100, [1.0] * 100)
    assert result.p_value == 1.0
    assert result.common_language_effect == 0.5


def test_bad_samples_are_rejected() -> None:
    with pytest.raises(ValueError):
        mann_whitney([], [1.0])
    with pytest.raises(ValueError):
        mann_whitney([math.nan, 1.0], [1.0])
    with pytest.raises(ValueError):
        mann_whitney([1.0, 1.0], [1.0, 2.0], method="exact")


# -- Hodges-Lehmann ----------------------------------------------------------------------------


def _brute(x: np.ndarray, y: np.ndarray, confidence: float) -> tuple[float, float, float]:
    diffs = np.sort(np.subtract.outer(x, y).ravel())
    n1, n2 = len(x), len(y)
    _, counts = np.unique(np.concatenate([x, y]), return_counts=True)
    n = n1 + n2
    var = n1 * n2 / 12 * ((n + 1) - np.sum(counts**3 - counts) / (n * (n - 1)))
    c = math.floor(n1 * n2 / 2 - stats.norm.ppf((1 + confidence) / 2) * math.sqrt(var))
    return float(np.median(diffs)), float(diffs[c - 1]), float(diffs[n1 * n2 - c])


@pytest.mark.parametrize(("n1", "n2", "rounded"), [(7, 9, False), (60, 80, False), (90, 70, True)])
def test_hodges_lehmann_matches_all_pairwise_differences(n1: int, n2: int, rounded: bool) -> None:
    rng = np.random.default_rng(n1 + n2)
    x, y = rng.lognormal(0.3, 0.5, n1), rng.lognormal(0.0, 0.5, n2)
    if rounded:
        x, y = np.round(x, 1), np.round(y, 1)
    result = hodges_lehmann(x, y, confidence=0.95)
    estimate, lower, upper = _brute(x, y, 0.95)
    assert result.estimate == pytest.approx(estimate, rel=1e-12, abs=1e-12)
    assert result.lower == pytest.approx(lower, rel=1e-12, abs=1e-12)
    assert result.upper == pytest.approx(upper, rel=1e-12, abs=1e-12)


def test_hodges_lehmann_recovers_a_pure_shift() -> None:
    y = np.arange(1.0, 41.0)
    result = hodges_lehmann(y + 5.0, y)
    assert result.estimate == 5.0
    assert result.lower < 5.0 < result.upper


def test_hodges_lehmann_interval_is_unbounded_for_tiny_samples() -> None:
    result = hodges_lehmann([1.0, 2.0], [1.5], confidence=0.98)
    assert result.lower == -math.inf
    assert result.upper == math.inf


# -- tail quantiles ----------------------------------------------------------------------------


def test_same_median_heavier_tail_has_a_ratio_bound_above_tolerance() -> None:
    rng = np.random.default_rng(1)
    baseline = rng.lognormal(0, 0.5, 3000)
    canary = rng.lognormal(0, 0.5 + math.log(3) / 2.326, 600)
    result = quantile_ratio(canary, baseline, quantile=0.99, confidence=0.99)
    assert result.ratio_lower is not None
    assert 2.0 < result.ratio < 4.5
    assert result.ratio_lower > 1.5
    assert abs(np.median(canary) / np.median(baseline) - 1) < 0.15  # the median barely moved


def test_ratio_bound_is_missing_when_samples_cannot_bound_the_tail() -> None:
    # 20 values cannot give an upper bound of a p99 at 99.5%: P(all 20 below p99) = 0.82.
    result = quantile_ratio(np.arange(1.0, 21.0), np.arange(1.0, 21.0))
    assert result.ratio_lower is None
    assert result.ratio == pytest.approx(1.0)


def test_ratio_lower_bound_holds_its_confidence_under_the_null() -> None:
    rng = np.random.default_rng(3)
    trials = 300
    above = sum(
        (r := quantile_ratio(rng.lognormal(0, 0.7, 400), rng.lognormal(0, 0.7, 2000))).ratio_lower
        is not None
        and r.ratio_lower > 1.0
        for _ in range(trials)
    )
    # True ratio is 1; the bound exceeds it with probability <= 1% (binomial slack: 3 sd).
    assert above <= trials * 0.01 + 3 * math.sqrt(trials * 0.01)


def test_order_statistic_ranks_match_scipy_binomial() -> None:
    from headway.rollout._stats import _binomial_cdf_table, _order_lower, _order_upper

    n, q, alpha = 1000, 0.99, 0.005
    cdf = _binomial_cdf_table(n, q)
    np.testing.assert_allclose(cdf, stats.binom.cdf(np.arange(n + 1), n, q), atol=1e-12)
    low, high = _order_lower(cdf, alpha), _order_upper(cdf, alpha)
    assert low is not None
    assert high is not None
    # l: largest rank with P(B >= l) >= 1 - alpha; u: smallest with P(B <= u - 1) >= 1 - alpha.
    assert stats.binom.sf(low - 1, n, q) >= 1 - alpha > stats.binom.sf(low, n, q)
    assert stats.binom.cdf(high - 1, n, q) >= 1 - alpha > stats.binom.cdf(high - 2, n, q)
