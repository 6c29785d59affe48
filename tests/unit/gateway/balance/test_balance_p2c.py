"""Power-of-two-choices strategies: load comparison, weights, exclusion. Seeded, exact."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headway.core import ManualClock
from headway.gateway.balance import Endpoint, LeastOutstandingP2C, PeakEwma
from headway.gateway.balance._strategy import TwoChoices


def _pool(clock: ManualClock, *weights: float) -> list[Endpoint[Any]]:
    return [Endpoint(f"e{i}", None, weight=w, clock=clock) for i, w in enumerate(weights)]


def test_two_endpoints_always_go_to_the_less_loaded(clock: ManualClock) -> None:
    a, b = pool = _pool(clock, 1, 1)
    b.outstanding = 3
    p2c = LeastOutstandingP2C(rng=random.Random(1))
    assert all(p2c.pick(pool) is a for _ in range(200))
    a.outstanding = 4
    assert all(p2c.pick(pool) is b for _ in range(200))


def test_tie_goes_to_the_first_drawn(clock: ManualClock) -> None:
    pool = _pool(clock, 1, 1)
    # With equal loads the winner is whichever was drawn first; replaying the same seed's
    # first draw shows it (uniform weights: index = int(random() * n)).
    first = int(random.Random(7).random() * 2)
    assert LeastOutstandingP2C(rng=random.Random(7)).pick(pool) is pool[first]


def test_most_loaded_of_many_is_never_picked(clock: ManualClock) -> None:
    pool = _pool(clock, 1, 1, 1, 1)
    pool[2].outstanding = 10  # strictly the most loaded: it loses every comparison
    p2c = LeastOutstandingP2C(rng=random.Random(3))
    picks = Counter(p2c.pick(pool) for _ in range(4000))
    assert pool[2] not in picks
    assert set(picks) == {pool[0], pool[1], pool[3]}


def test_load_is_per_weight(clock: ManualClock) -> None:
    a, b = pool = _pool(clock, 4, 1)
    a.outstanding = 3  # 3/4 per weight
    b.outstanding = 1  # 1/1 per weight
    p2c = LeastOutstandingP2C(rng=random.Random(5))
    assert all(p2c.pick(pool) is a for _ in range(100))


def test_weights_shape_the_spread_statistically(clock: ManualClock) -> None:
    # Idle endpoints of weights 1, 2, 3, 4: each pick is the first of a weighted draw without
    # replacement (ties go to the first), so shares follow the weights.
    pool = _pool(clock, 1, 2, 3, 4)
    p2c = LeastOutstandingP2C(rng=random.Random(42))
    n = 40_000
    counts = Counter(p2c.pick(pool) for _ in range(n))
    for ep in pool:
        assert counts[ep] / n == pytest.approx(ep.weight / 10, abs=0.01)


def test_second_draw_is_distinct_and_weighted(clock: ManualClock) -> None:
    # The second draw decides when the first is busier: with e0 always busier, the winner is
    # the second draw, whose share (averaged over the first) is never e0 itself.
    pool = _pool(clock, 1, 1, 2)
    pool[0].outstanding = 5
    p2c = LeastOutstandingP2C(rng=random.Random(9))
    counts = Counter(p2c.pick(pool) for _ in range(20_000))
    assert counts[pool[0]] == 0
    # P(e2 in the pair) = 1 - P(pair == {e0, e1}) = 1 - (1/4*1/3 + 1/4*1/3) = 5/6; e2 wins
    # against e1 on ties only when drawn first, so e2's share is 1/2 + 1/4*2/3 = 2/3.
    assert counts[pool[2]] / 20_000 == pytest.approx(2 / 3, abs=0.015)


def test_exclude_sends_a_retry_elsewhere(clock: ManualClock) -> None:
    pool = _pool(clock, 1, 1, 1)
    pool[1].outstanding = 100
    p2c = LeastOutstandingP2C(rng=random.Random(11))
    tried = {pool[0]}
    picks = {p2c.pick(pool, exclude=tried) for _ in range(300)}
    assert picks == {pool[2]}  # e0 (idle, tried) never; e2 beats busy e1 every time
    tried = {pool[0], pool[2]}
    assert all(p2c.pick(pool, exclude=tried) is pool[1] for _ in range(50))  # busy, untried


def test_exclude_falls_back_to_tried_when_nothing_else(clock: ManualClock) -> None:
    pool = _pool(clock, 1, 1)
    p2c = LeastOutstandingP2C(rng=random.Random(0))
    assert p2c.pick(pool, exclude=set(pool)) in pool
    assert p2c.pick([pool[0]], exclude={pool[0]}) is pool[0]


def test_empty_and_single(clock: ManualClock) -> None:
    p2c = LeastOutstandingP2C(rng=random.Random(0))
    assert p2c.pick([]) is None
    (only,) = _pool(clock, 1)
    assert p2c.pick([only]) is only


def test_peak_ewma_prefers_the_faster_endpoint(clock: ManualClock) -> None:
    fast, slow = pool = _pool(clock, 1, 1)
    fast.finish(fast.start(), latency=0.05)
    slow.finish(slow.start(), latency=0.5)
    strategy = PeakEwma(rng=random.Random(2))
    assert all(strategy.pick(pool) is fast for _ in range(100))
    # Cost is latency x (outstanding + 1): 0.05 x 11 > 0.5 x 1, so the slow one wins now.
    fast.outstanding = 10
    assert all(strategy.pick(pool) is slow for _ in range(100))


def test_peak_ewma_reacts_to_one_slow_sample(clock: ManualClock) -> None:
    a, b = pool = _pool(clock, 1, 1)
    a.finish(a.start(), latency=0.05)
    b.finish(b.start(), latency=0.06)
    strategy = PeakEwma(rng=random.Random(4))
    assert strategy.pick(pool) is a
    clock.step(1.0)
    a.finish(a.start(), latency=3.0)  # peak: believed at once
    assert all(strategy.pick(pool) is b for _ in range(50))


def test_peak_ewma_weight_divides_cost(clock: ManualClock) -> None:
    a, b = pool = _pool(clock, 4, 1)
    a.finish(a.start(), latency=0.2)  # cost 0.2 / 4 = 0.05
    b.finish(b.start(), latency=0.1)  # cost 0.1 / 1
    strategy = PeakEwma(rng=random.Random(6))
    assert all(strategy.pick(pool) is a for _ in range(50))


def test_peak_ewma_excludes_tried(clock: ManualClock) -> None:
    pool = _pool(clock, 1, 1, 1)
    strategy = PeakEwma(rng=random.Random(8))
    picks = {strategy.pick(pool, exclude={pool[2]}) for _ in range(200)}
    assert picks == {pool[0], pool[1]}


@settings(max_examples=200, deadline=None)
@given(
    weights=st.lists(st.floats(min_value=1e-6, max_value=1e6), min_size=2, max_size=8),
    seed=st.integers(0, 2**32),
)
def test_two_choices_are_always_distinct_valid_indices(weights: list[float], seed: int) -> None:
    eps = [Endpoint(f"e{i}", None, weight=w) for i, w in enumerate(weights)]
    choices = TwoChoices(random.Random(seed))
    for _ in range(20):
        i, j = choices.draw(eps)
        assert 0 <= i < len(eps)
        assert 0 <= j < len(eps)
        assert i != j
