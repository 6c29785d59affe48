from __future__ import annotations

import random

import pytest

from headway.guard.retry import ExponentialBackoff


def test_defaults_are_envoys() -> None:
    backoff = ExponentialBackoff(random=lambda: 1.0)
    assert [backoff.ceiling(n) for n in range(6)] == [0.025, 0.05, 0.1, 0.2, 0.25, 0.25]
    assert backoff.delay(100) == 0.25  # huge attempt numbers neither overflow nor pass the cap


def test_full_jitter_schedule_is_exact_with_seeded_rng() -> None:
    backoff = ExponentialBackoff(0.1, 1.0, rng=random.Random(7))
    expected_rng = random.Random(7)
    expected = [expected_rng.random() * min(1.0, 0.1 * 2**n) for n in range(6)]
    assert [backoff.delay(n) for n in range(6)] == expected


def test_jitter_spans_zero_to_ceiling() -> None:
    assert ExponentialBackoff(0.1, 1.0, random=lambda: 0.0).delay(3) == 0.0
    assert ExponentialBackoff(0.1, 1.0, random=lambda: 0.5).delay(2) == pytest.approx(0.2)


def test_rejects_negative() -> None:
    with pytest.raises(ValueError):
        ExponentialBackoff(-1)
