"""Sticky bucketing: stable per key, uniform, and ramping up never moves a key back."""

from __future__ import annotations

import mmh3
import pytest

from headway.rollout import BUCKETS, bucket, covers, percent_to_buckets


def test_bucket_is_a_pure_function_of_salt_and_key() -> None:
    # Known values pin the hash (MurmurHash3 x86_32, seed 0, of "salt:key"): a change of hash
    # function would silently move users to the other side on upgrade.
    assert bucket("m", "k") == 8811
    assert bucket("m", "k") == mmh3.hash("m:k", 0, signed=False) % BUCKETS
    assert all(0 <= bucket("m", f"k{i}") < BUCKETS for i in range(1000))


def test_the_salt_reorders_keys() -> None:
    keys = [f"user{i}" for i in range(200)]
    first = {k for k in keys if covers(bucket("model-a", k), 10)}
    second = {k for k in keys if covers(bucket("model-b", k), 10)}
    assert first != second


@pytest.mark.parametrize("percent", [1, 5, 30, 50, 90])
def test_share_is_close_to_the_percentage(percent: float) -> None:
    n = 20_000
    inside = sum(covers(bucket("sim-small", f"user-{i}"), percent) for i in range(n))
    share = inside / n
    sd = (percent / 100 * (1 - percent / 100) / n) ** 0.5
    assert abs(share - percent / 100) < 4 * sd


def test_ramping_up_only_adds_keys() -> None:
    keys = [f"conversation-{i}" for i in range(5000)]
    previous: set[str] = set()
    for percent in (0, 0.5, 1, 5, 10, 25, 50, 75, 99.99, 100):
        now = {k for k in keys if covers(bucket("m", k), percent)}
        assert previous <= now
        previous = now
    assert previous == set(keys)


def test_percent_to_buckets_rounds_and_validates() -> None:
    assert percent_to_buckets(0) == 0
    assert percent_to_buckets(100) == BUCKETS
    assert percent_to_buckets(0.01) == 1
    assert percent_to_buckets(12.34) == 1234
    assert percent_to_buckets(30) == 3000
    for bad in (-0.01, 100.01):
        with pytest.raises(ValueError, match=r"0\.\.100"):
            percent_to_buckets(bad)
