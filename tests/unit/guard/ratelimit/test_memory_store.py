"""MemoryStore: bounded memory (expiry sweep, max_keys eviction) and the GCRA step itself."""

from __future__ import annotations

import math

import pytest

from headway.core import ManualClock
from headway.store import Decision, MemoryStore, gcra_step

T, TAU = 0.25, 1.0  # 4 per second, burst 4


def test_gcra_step_values() -> None:
    now = 1000.0
    tat, d = gcra_step(None, now, T, TAU, 1.0)
    assert (tat, d) == (1000.25, Decision(True, 0.0, 3.0, 0.25))
    tat, d = gcra_step(1001.0, now, T, TAU, 1.0)
    assert (tat, d) == (1001.0, Decision(False, 0.25, 0.0, 1.0))
    tat, d = gcra_step(999.0, now, T, TAU, 4.0)  # stale TAT == fresh key
    assert (tat, d) == (1001.0, Decision(True, 0.0, 0.0, 1.0))
    tat, d = gcra_step(None, now, T, TAU, 4.5)
    assert (tat, d) == (now, Decision(False, math.inf, 4.0, 0.0))
    tat, d = gcra_step(1001.0, now, T, TAU, 4.0, force=True)
    assert (tat, d) == (1002.0, Decision(True, 0.0, 0.0, 2.0))
    tat, d = gcra_step(1000.5, now, T, TAU, -4.0, force=True)
    assert (tat, d) == (now, Decision(True, 0.0, 4.0, 0.0))


async def test_async_api_matches_sync(clock: ManualClock) -> None:
    store = MemoryStore(clock=clock)
    d = await store.acquire("k", T, TAU, 2.0)
    assert d == Decision(True, 0.0, 2.0, 0.5)
    d = await store.adjust("k", T, TAU, -1.0)
    assert d == Decision(True, 0.0, 3.0, 0.25)
    assert store.tat("k") == clock.now() + 0.25


def test_expired_keys_are_swept_amortised(clock: ManualClock) -> None:
    store = MemoryStore(clock=clock)
    now = clock.now()
    for i in range(1023):
        assert store.admit(f"old{i}", T, TAU, 1.0, now) == 0.0
    assert len(store) == 1023
    # The 1024th new key triggers a sweep; at now + 0.25 every old key is back to fresh.
    assert store.admit("new", T, TAU, 1.0, now + 0.25) == 0.0
    assert len(store) == 1
    assert store.tat("old0") is None


def test_sweep_drops_only_fresh_keys(clock: ManualClock) -> None:
    store = MemoryStore(clock=clock)
    now = clock.now()
    store.admit("short", T, TAU, 1.0, now)
    store.admit("long", T, TAU, 4.0, now)
    clock.step(0.5)
    assert store.sweep() == 1
    assert store.tat("short") is None
    assert store.tat("long") == now + 1.0
    assert store.tracked_keys() == 1


def test_max_keys_evicts_oldest_first(clock: ManualClock) -> None:
    store = MemoryStore(max_keys=3, clock=clock)
    now = clock.now()
    for i in range(5):
        assert store.admit(f"k{i}", T, TAU, 4.0, now) == 0.0
    assert len(store) == 3
    assert store.evicted == 2
    assert [store.tat(f"k{i}") for i in range(5)] == [None, None, now + 1, now + 1, now + 1]
    # Updating a key never evicts.
    clock.step(0.25)
    assert store.admit("k2", T, TAU, 1.0, clock.now()) == 0.0
    assert (len(store), store.evicted) == (3, 2)


def test_max_keys_sweeps_expired_before_evicting(clock: ManualClock) -> None:
    store = MemoryStore(max_keys=8, clock=clock)
    now = clock.now()
    for i in range(7):
        store.admit(f"k{i}", T, TAU, 1.0, now)
    store.admit("live", T, TAU, 4.0, now)
    store.admit("new", T, TAU, 1.0, now + 0.5)
    assert store.evicted == 0
    assert sorted(store._tats) == ["live", "new"]


def test_rejection_leaves_state_unchanged(clock: ManualClock) -> None:
    store = MemoryStore(clock=clock)
    now = clock.now()
    assert store.admit("k", T, TAU, 4.0, now) == 0.0
    assert store.admit("k", T, TAU, 1.0, now) == 0.25
    assert store.admit("k", T, TAU, 5.0, now) == math.inf
    assert store.tat("k") == now + 1.0
    assert store.admit("fresh", T, TAU, 5.0, now) == math.inf
    assert store.tat("fresh") is None


def test_invalid_max_keys() -> None:
    with pytest.raises(ValueError, match="max_keys"):
        MemoryStore(max_keys=0)
