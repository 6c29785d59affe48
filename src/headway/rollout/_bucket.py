"""Sticky percentage assignment: a key hashes to a fixed bucket, a percentage covers buckets.

A key (tenant, user, conversation) hashes with MurmurHash3 (x86, 32-bit, the hash LaunchDarkly
and the OpenFeature flagd fractional evaluator use for the same job) of ``salt:key`` into one of
``BUCKETS`` buckets. A percentage ``p`` covers the buckets ``[0, p * BUCKETS / 100)``: the range
keeps its start when ``p`` grows (the bucket-start rule), so ramping up only ever moves keys
into the range and never reshuffles one already in it; ramping down moves keys out in reverse.
The salt (a model or flag name) gives each rollout its own key order, so the same few users are
not the first on every canary.

Guarantees: ``bucket`` is a pure function of ``(salt, key)`` (stable across processes, hosts and
restarts, unlike Python's ``hash``); ``covers(b, p)`` is monotone in ``p``.
"""

from __future__ import annotations

import mmh3

__all__ = ["BUCKETS", "bucket", "covers", "percent_to_buckets"]

#: Buckets in the unit interval: 0.01% resolution (LaunchDarkly uses 100,000, flagd 100).
BUCKETS = 10_000


def bucket(salt: str, key: str) -> int:
    """The bucket in ``[0, BUCKETS)`` of ``key`` under ``salt``."""
    return mmh3.hash(f"{salt}:{key}", 0, signed=False) % BUCKETS


def percent_to_buckets(percent: float) -> int:
    """How many buckets ``percent`` (0..100) covers, rounded to the nearest bucket."""
    if not 0.0 <= percent <= 100.0:
        raise ValueError(f"percentage must be within 0..100, got {percent!r}")
    return round(percent * BUCKETS / 100.0)


def covers(bucket_: int, percent: float) -> bool:
    """Whether a key in ``bucket_`` falls inside ``percent`` (starting at bucket 0)."""
    return bucket_ < percent_to_buckets(percent)
