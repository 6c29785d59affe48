"""AIMD and Gradient2 update rules, checked sample by sample."""

from __future__ import annotations

import pytest

from headway.guard.concurrency import AIMDLimit, FixedLimit, Gradient2Limit


def test_aimd_defaults_follow_netflix() -> None:
    limit = AIMDLimit()
    assert limit.limit == 20
    # A drop at the minimum stays at the minimum (20 * 0.9 = 18 -> clamped to 20).
    limit.on_sample(0.0, 0.1, 20, True)
    assert limit.limit == 20


def test_aimd_increase_decrease_sequence_is_exact() -> None:
    limit = AIMDLimit(initial_limit=10, min_limit=1, max_limit=12)
    seen: list[int] = []
    limit.subscribe(seen.append)
    limit.on_sample(0.0, 0.1, 5, False)  # 2*5 >= 10: +1
    assert limit.limit == 11
    limit.on_sample(0.0, 0.1, 6, False)  # 12 >= 11: +1
    limit.on_sample(0.0, 0.1, 6, False)  # 12 >= 12: +1 but max 12
    assert limit.limit == 12
    limit.on_sample(0.0, 0.1, 12, True)  # drop: int(12 * 0.9) = 10
    assert limit.limit == 10
    limit.on_sample(0.0, 5.001, 10, False)  # rtt over the 5 s timeout counts as a drop: 9
    assert limit.limit == 9
    limit.on_sample(0.0, 5.0, 9, False)  # exactly the timeout is not a drop: +1
    assert limit.limit == 10
    for expected in (9, 8, 7, 6, 5, 4, 3, 2, 1, 1):
        limit.on_sample(0.0, 0.1, 1, True)
        assert limit.limit == expected
    assert seen == [11, 12, 10, 9, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1]


def test_aimd_does_not_grow_when_idle() -> None:
    limit = AIMDLimit(initial_limit=10, min_limit=1)
    for _ in range(100):
        limit.on_sample(0.0, 0.1, 4, False)  # 2*4 < 10: app-limited
    assert limit.limit == 10


def test_aimd_validates_parameters() -> None:
    with pytest.raises(ValueError):
        AIMDLimit(backoff_ratio=1.0)
    with pytest.raises(ValueError):
        AIMDLimit(initial_limit=5)  # below the default min of 20
    with pytest.raises(ValueError):
        AIMDLimit(min_limit=0, initial_limit=1)


def test_gradient2_first_samples_are_exact() -> None:
    limit = Gradient2Limit()
    assert (limit.limit, limit.estimate) == (20, 20.0)
    limit.on_sample(0.0, 1.0, 20, False)
    # gradient = clamp(1.5 * 1/1) = 1.0; new = 20 + 4 = 24; 20*0.8 + 24*0.2 = 20.8
    assert limit.estimate == pytest.approx(20.8)
    assert limit.limit == 20
    limit.on_sample(0.0, 1.0, 20, False)
    assert limit.estimate == pytest.approx(21.6)
    assert limit.limit == 21
    # Latency doubles: long = mean(1, 1, 2) = 4/3, short = 2
    # gradient = clamp(1.5 * (4/3) / 2) = 1.0 -> still grows by 0.8
    limit.on_sample(0.0, 2.0, 21, False)
    assert limit.estimate == pytest.approx(22.4)
    # Latency 4x: long = (1+1+2+4)/4 = 2, gradient = clamp(1.5 * 2 / 4) = 0.75
    # new = 22.4*0.75 + 4 = 20.8; 22.4*0.8 + 20.8*0.2 = 22.08
    limit.on_sample(0.0, 4.0, 22, False)
    assert limit.estimate == pytest.approx(22.08)
    assert limit.limit == 22


def _warm(limit: Gradient2Limit, rtt: float, samples: int) -> None:
    for _ in range(samples):
        limit.on_sample(0.0, rtt, limit.limit, False)


def test_gradient2_converges_down_to_min_when_latency_doubles() -> None:
    limit = Gradient2Limit(initial_limit=100, min_limit=20, max_limit=200, rtt_tolerance=1.0)
    _warm(limit, 1.0, 50)
    assert limit.limit == 140  # 100 + 50 * 0.8: steady latency under load grows the limit
    history = []
    for _ in range(60):
        limit.on_sample(0.0, 2.0, limit.limit, False)
        history.append(limit.limit)
    assert history == sorted(history, reverse=True)  # monotone fall
    assert history[0] == 126  # 140*0.8 + (140*0.5 + 4)*0.2 = 126.8
    assert limit.limit == 20


def test_gradient2_with_default_tolerance_falls_on_sustained_rise() -> None:
    limit = Gradient2Limit(initial_limit=100, min_limit=1, max_limit=200)
    _warm(limit, 1.0, 50)
    _warm(limit, 3.0, 40)  # 3x the baseline: well past the 1.5x tolerance
    assert limit.limit < 30


def test_gradient2_grows_to_max_at_steady_latency_under_load() -> None:
    limit = Gradient2Limit(min_limit=1)
    seen: list[int] = []
    limit.subscribe(seen.append)
    _warm(limit, 1.0, 225)  # +0.8 per sample: 20 + 225*0.8 = 200
    assert limit.limit == 200
    assert seen == list(range(21, 201))
    _warm(limit, 1.0, 10)
    assert limit.limit == 200


def test_gradient2_does_not_grow_when_app_limited() -> None:
    limit = Gradient2Limit(min_limit=1)
    for _ in range(300):
        limit.on_sample(0.0, 1.0, 9, False)  # 9 < 20/2
    assert limit.limit == 20
    limit.on_sample(0.0, 1.0, 10, False)  # 10 >= 20/2: grows
    assert limit.estimate == pytest.approx(20.8)


def test_gradient2_decays_long_rtt_after_overload() -> None:
    limit = Gradient2Limit(min_limit=1, long_window=600)
    _warm(limit, 10.0, 20)
    assert limit.long_rtt == pytest.approx(10.0)
    limit.on_sample(0.0, 1.0, 1, False)
    # long = 10 + (1 - 10) * 2/601, then long/short > 2 so it is multiplied by 0.95
    assert limit.long_rtt == pytest.approx((10.0 - 9.0 * 2 / 601) * 0.95)


def test_gradient2_queue_size_may_depend_on_limit() -> None:
    limit = Gradient2Limit(initial_limit=20, min_limit=1, queue_size=lambda lim: lim / 2)
    limit.on_sample(0.0, 1.0, 20, False)
    assert limit.estimate == pytest.approx(20 * 0.8 + (20 + 10) * 0.2)


def test_fixed_limit_ignores_samples() -> None:
    limit = FixedLimit(3)
    limit.on_sample(0.0, 100.0, 3, True)
    assert limit.limit == 3
    with pytest.raises(ValueError):
        FixedLimit(0)
