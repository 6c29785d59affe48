"""Properties of the GCRA rate limiter over random traces of arrivals and costs."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from headway.store import MemoryStore, gcra_step

arrivals = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=5.0, allow_nan=False),  # gap to previous arrival
        st.floats(min_value=0.0, max_value=6.0, allow_nan=False),  # cost (some above burst)
    ),
    min_size=1,
    max_size=120,
)
rates = st.sampled_from([0.5, 1.0, 3.0, 4.0, 10.0, 7.3])
periods = st.sampled_from([0.1, 1.0, 2.5])
bursts = st.sampled_from([1.0, 2.0, 4.0, 5.5])


@settings(max_examples=300, deadline=None)
@given(arrivals, rates, periods, bursts)
def test_no_window_admits_more_than_rate_plus_burst(
    trace: list[tuple[float, float]], rate: float, period: float, burst: float
) -> None:
    interval = period / rate
    store = MemoryStore(max_keys=10)
    now = 1000.0
    admitted: list[tuple[float, float]] = []
    for gap, cost in trace:
        now += gap
        if store.admit("k", interval, burst * interval, cost, now) == 0.0:
            admitted.append((now, cost))
    # Every window [t_i, t_j] between admitted arrivals (the tightest windows there are).
    for i, (start, _) in enumerate(admitted):
        total = 0.0
        for end, cost in admitted[i:]:
            total += cost
            bound = rate * (end - start) / period + burst
            assert total <= bound + 1e-9 * max(1.0, bound), (start, end, total, bound)


@settings(max_examples=300, deadline=None)
@given(arrivals, rates, bursts)
def test_fast_path_and_retry_after_agree_with_gcra_step(
    trace: list[tuple[float, float]], rate: float, burst: float
) -> None:
    interval = 1.0 / rate
    tolerance = burst * interval
    store = MemoryStore()
    tat: float | None = None
    now = 1000.0
    for gap, cost in trace:
        now += gap
        new_tat, decision = gcra_step(tat, now, interval, tolerance, cost)
        retry_after = store.admit("k", interval, tolerance, cost, now)
        assert (retry_after == 0.0) == decision.allowed
        if not decision.allowed:
            assert retry_after == decision.retry_after
            assert math.isinf(retry_after) == (cost > burst)
            # Waiting exactly retry_after admits the same cost (barring float rounding).
            if not math.isinf(retry_after):
                _, later = gcra_step(
                    tat, now + retry_after * (1 + 1e-12), interval, tolerance, cost
                )
                assert later.allowed
        tat = new_tat if decision.allowed else tat
        if tat is not None and tat > now:
            assert store.tat("k") == tat


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=-8.0, max_value=8.0, allow_nan=False), max_size=40))
def test_forced_adjustments_never_leave_a_key_better_than_fresh(deltas: list[float]) -> None:
    tat: float | None = None
    now = 1000.0
    for delta in deltas:
        tat, decision = gcra_step(tat, now, 0.25, 1.0, delta, force=True)
        assert decision.allowed
        assert tat >= now
        assert 0.0 <= decision.remaining <= 4.0
        now += 0.1
