from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator, Hashable
from typing import Any

import pytest

from headway.core import ManualClock, RecordingHooks
from headway.guard.cache import Cache
from headway.guard.cache._lru import Entry, insert


async def _settle(turns: int = 10) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    yield
    await _settle()
    leaked = asyncio.all_tasks() - {asyncio.current_task()}
    assert leaked == set()


class Upstream:
    """Answers ``request:<n>`` (n = its call number) after ``delay`` clock seconds."""

    def __init__(self, clock: ManualClock, delay: float = 0.0) -> None:
        self.clock = clock
        self.delay = delay
        self.error: Exception | None = None
        self.calls = 0
        self.cancelled = 0

    async def __call__(self, request: str) -> str:
        self.calls += 1
        number = self.calls
        if self.delay:
            try:
                await self.clock.sleep(self.delay)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if self.error is not None:
            raise self.error
        return f"{request}:{number}"


def _key(request: str) -> Hashable | None:
    return None if request.startswith("nocache") else request


async def test_hit_within_ttl_and_miss_after_ttl_plus_stale(clock: ManualClock) -> None:
    upstream = Upstream(clock)
    cache = Cache(_key, ttl=10.0, stale_ttl=5.0, clock=clock)
    service = cache.wrap(upstream)
    assert await service("q") == "q:1"
    clock.step(9.999)
    assert await service("q") == "q:1"
    assert upstream.calls == 1
    clock.step(5.001)  # exactly ttl + stale_ttl after storing: expired
    assert await service("q") == "q:2"
    assert upstream.calls == 2
    snap = cache.snapshot()
    assert (snap["hits"], snap["misses"], snap["stale_hits"], snap["entries"]) == (1, 2, 0, 1)


async def test_fresh_window_ends_exactly_at_ttl_without_stale_window(clock: ManualClock) -> None:
    upstream = Upstream(clock)
    service = Cache(_key, ttl=10.0, clock=clock).wrap(upstream)
    await service("q")
    clock.step(10.0)
    assert await service("q") == "q:2"


async def test_stale_value_is_served_at_once_while_one_refresh_runs(clock: ManualClock) -> None:
    upstream = Upstream(clock, delay=1.0)
    cache = Cache(_key, ttl=10.0, stale_ttl=5.0, clock=clock)
    service = cache.wrap(upstream)
    first = asyncio.create_task(service("q"))
    await clock.advance(1.0)
    assert await first == "q:1"  # stored at t=1, fresh until t=11
    await clock.advance(10.0)
    # Stale: served without waiting for the clock, refreshed once in the background.
    for _ in range(5):
        assert await service("q") == "q:1"
    await _settle()
    assert upstream.calls == 2
    snap = cache.snapshot()
    assert (snap["stale_hits"], snap["refreshes"], snap["refreshing"]) == (5, 1, 1)
    await clock.advance(1.0)
    assert cache.snapshot()["refreshing"] == 0
    assert await service("q") == "q:2"
    assert cache.snapshot()["hits"] == 1
    # The refreshed entry is fresh for a full ttl from when it was stored (t=12).
    await clock.advance(9.999)
    assert await service("q") == "q:2"
    assert upstream.calls == 2


async def test_failed_refresh_keeps_the_stale_value_and_is_counted(
    clock: ManualClock, hooks: RecordingHooks
) -> None:
    upstream = Upstream(clock)
    cache = Cache(_key, ttl=10.0, stale_ttl=5.0, clock=clock, hooks=hooks, name="c")
    service = cache.wrap(upstream)
    assert await service("q") == "q:1"
    upstream.error = RuntimeError("down")
    clock.step(10.0)
    assert await service("q") == "q:1"
    await _settle()
    assert cache.snapshot()["refresh_errors"] == 1
    assert hooks.counts[("cache", "c", "refresh_error")] == 1
    # Still served stale; the next stale hit tries one more refresh.
    assert await service("q") == "q:1"
    await _settle()
    snap = cache.snapshot()
    assert (snap["refreshes"], snap["refresh_errors"], snap["stale_hits"]) == (2, 2, 2)
    clock.step(5.0)  # stale window over: the error now reaches the caller
    with pytest.raises(RuntimeError, match="down"):
        await service("q")
    assert cache.snapshot()["entries"] == 0


async def test_lru_eviction_at_max_entries(clock: ManualClock) -> None:
    upstream = Upstream(clock)
    cache = Cache(_key, ttl=60.0, max_entries=2, clock=clock)
    service = cache.wrap(upstream)
    await service("a")
    await service("b")
    assert await service("a") == "a:1"  # a is now the most recently used
    await service("c")  # evicts b
    assert cache.snapshot()["evictions"] == 1
    assert cache.snapshot()["entries"] == 2
    assert await service("a") == "a:1"
    assert await service("c") == "c:3"
    assert await service("b") == "b:4"
    assert upstream.calls == 4


async def test_none_key_passes_through_uncached(clock: ManualClock) -> None:
    upstream = Upstream(clock)
    cache = Cache(_key, ttl=60.0, clock=clock)
    service = cache.wrap(upstream)
    assert await service("nocache-x") == "nocache-x:1"
    assert await service("nocache-x") == "nocache-x:2"
    snap = cache.snapshot()
    assert (snap["bypassed"], snap["misses"], snap["entries"]) == (2, 0, 0)


async def test_errors_are_never_cached(clock: ManualClock) -> None:
    upstream = Upstream(clock)
    upstream.error = RuntimeError("boom")
    service = Cache(_key, ttl=60.0, clock=clock).wrap(upstream)
    with pytest.raises(RuntimeError):
        await service("q")
    upstream.error = None
    assert await service("q") == "q:2"
    assert await service("q") == "q:2"


async def test_should_cache_filters_responses(clock: ManualClock) -> None:
    upstream = Upstream(clock)
    cache = Cache(_key, ttl=60.0, should_cache=lambda r: r.endswith(":2"), clock=clock)
    service = cache.wrap(upstream)
    assert await service("q") == "q:1"
    assert await service("q") == "q:2"
    assert await service("q") == "q:2"
    assert upstream.calls == 2


async def test_burst_of_identical_misses_costs_one_upstream_call(clock: ManualClock) -> None:
    upstream = Upstream(clock, delay=1.0)
    cache = Cache(_key, ttl=60.0, clock=clock)
    service = cache.wrap(upstream)
    tasks = [asyncio.create_task(service("q")) for _ in range(50)]
    await clock.advance(1.0)
    assert await asyncio.gather(*tasks) == ["q:1"] * 50
    assert upstream.calls == 1
    snap = cache.snapshot()
    assert (snap["misses"], snap["loads"], snap["entries"]) == (50, 1, 1)


async def test_refresh_and_miss_for_the_same_key_share_one_call(clock: ManualClock) -> None:
    upstream = Upstream(clock, delay=1.0)
    cache = Cache(_key, ttl=10.0, stale_ttl=1.0, clock=clock)
    service = cache.wrap(upstream)
    first = asyncio.create_task(service("q"))
    await clock.advance(1.0)
    await first
    await clock.advance(10.5)  # stale: refresh starts, takes until t=12.5
    assert await service("q") == "q:1"
    await _settle()
    clock.step(0.5)  # t=12: the stale window is over while the refresh still runs
    late = asyncio.create_task(service("q"))
    await _settle()
    assert upstream.calls == 2
    await clock.advance(0.5)
    assert await late == "q:2"
    assert upstream.calls == 2


async def test_invalidate_and_clear_win_over_fetches_in_flight(clock: ManualClock) -> None:
    upstream = Upstream(clock, delay=1.0)
    cache = Cache(_key, ttl=60.0, clock=clock)
    service = cache.wrap(upstream)
    stale_fetch = asyncio.create_task(service("q"))
    await _settle()
    assert cache.invalidate("q") is False
    fresh_fetch = asyncio.create_task(service("q"))  # not joined to the invalidated fetch
    await clock.advance(1.0)
    assert await stale_fetch == "q:1"
    assert await fresh_fetch == "q:2"
    upstream.delay = 0.0
    assert await service("q") == "q:2"
    assert cache.invalidate("q") is True
    assert await service("q") == "q:3"
    upstream.delay = 1.0
    pending = asyncio.create_task(service("r"))
    await _settle()
    cache.clear()
    await clock.advance(1.0)
    assert await pending == "r:4"
    assert cache.snapshot()["entries"] == 0  # cleared, and r (fetched before) not stored
    upstream.delay = 0.0
    assert await service("q") == "q:5"


async def test_aclose_cancels_outstanding_refreshes(clock: ManualClock) -> None:
    upstream = Upstream(clock, delay=100.0)
    cache = Cache(_key, ttl=10.0, stale_ttl=100.0, clock=clock)
    service = cache.wrap(upstream)
    first = asyncio.create_task(service("q"))
    await clock.advance(100.0)
    await first
    await clock.advance(10.0)
    assert await service("q") == "q:1"
    await _settle()
    assert cache.snapshot()["refreshing"] == 1
    await cache.aclose()
    assert upstream.cancelled == 1
    assert cache.snapshot()["refreshing"] == 0
    assert cache.snapshot()["refresh_errors"] == 0  # cancellation is not an upstream error
    assert clock.pending_timers == 0


async def test_decorator_keys_on_arguments(clock: ManualClock) -> None:
    cache = Cache(ttl=60.0, clock=clock)
    calls: list[Any] = []

    @cache
    async def fetch(x: Any, *, tag: str = "") -> str:
        calls.append(x)
        return f"{x}{tag}"

    assert await fetch(1) == "1"
    assert await fetch(1) == "1"
    assert await fetch(1, tag="!") == "1!"
    assert await fetch([2]) == "[2]"  # unhashable: not cached
    assert await fetch([2]) == "[2]"
    assert calls == [1, 1, [2], [2]]
    assert cache.snapshot()["bypassed"] == 2


@pytest.mark.parametrize(
    "kwargs",
    [{"ttl": 0.0}, {"ttl": 1.0, "stale_ttl": -1.0}, {"ttl": 1.0, "max_entries": 0}],
)
def test_invalid_configuration_is_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Cache(_key, **kwargs)


def test_lru_insert_evicts_least_recently_used_first() -> None:
    entries: OrderedDict[Hashable, Entry] = OrderedDict()
    for k in "abc":
        assert insert(entries, k, Entry(k, 1.0, 2.0), 3) == 0
    entries.move_to_end("a")
    assert insert(entries, "d", Entry("d", 1.0, 2.0), 2) == 2
    assert list(entries) == ["a", "d"]
    assert insert(entries, "a", Entry("a2", 1.0, 2.0), 2) == 0
    assert list(entries) == ["d", "a"]
    assert entries["a"].value == "a2"
