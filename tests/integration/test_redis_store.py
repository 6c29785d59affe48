"""RedisStore against a real, private redis-server (started here on a free port)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from headway.core import ManualClock, RateLimited, RecordingHooks
from headway.guard.ratelimit import RateLimiter, RedisStore
from servers import free_port, private_redis

T, TAU = 0.25, 1.0  # 4 per second, burst 4


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    with private_redis() as port:
        yield port


@pytest.fixture
async def client(redis_port: int) -> AsyncIterator[Redis]:
    redis = Redis(host="127.0.0.1", port=redis_port)
    await redis.flushall()
    yield redis
    await redis.aclose()


@pytest.fixture
async def two_stores(redis_port: int) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    # Two clients with their own connection pools: two gateway instances. Generous timeouts and
    # on_error="deny": on a loaded CI machine a slow connect must not silently fall back to a
    # local limit (which would admit more), and the tests below also assert no error happened.
    def store() -> RedisStore:
        client = Redis(
            host="127.0.0.1", port=redis_port, socket_timeout=10, socket_connect_timeout=10
        )
        return RedisStore(client, on_error="deny")

    a, b = store(), store()
    yield a, b
    await a.client.aclose()
    await b.client.aclose()


@pytest.mark.redis
async def test_step_values_ttl_and_prefix(client: Redis, redis_port: int) -> None:
    store = RedisStore(Redis(host="127.0.0.1", port=redis_port), prefix="t:")
    d = await store.acquire("k", T, TAU, 3.0)
    assert d.allowed
    assert d.remaining == pytest.approx(1.0, abs=0.01)
    assert d.reset_after == pytest.approx(0.75, abs=0.01)
    d = await store.acquire("k", T, TAU, 2.0)
    assert not d.allowed
    assert d.retry_after == pytest.approx(0.25, abs=0.01)
    assert (await store.acquire("k", T, TAU, 5.0)).retry_after == float("inf")
    ttl = await client.pttl("t:k")
    assert 700 <= ttl <= 750
    assert await client.exists("headway:rl:k") == 0
    # A forced refund back to fresh deletes the key.
    d = await store.adjust("k", T, TAU, -10.0)
    assert d.reset_after == 0.0
    assert await client.exists("t:k") == 0
    # A forced charge goes into debt with a matching TTL.
    await store.adjust("k", T, TAU, 8.0)
    assert 1950 <= await client.pttl("t:k") <= 2000
    assert store.errors == 0
    await store.client.aclose()


@pytest.mark.redis
async def test_two_instances_share_one_limit(
    client: Redis, two_stores: tuple[RedisStore, RedisStore]
) -> None:
    a, b = two_stores
    # 1 per 100 s with burst 10: the refill during the test is negligible.
    limit_a = RateLimiter(0.01, burst=10, store=a, key="shared")
    limit_b = RateLimiter(0.01, burst=10, store=b, key="shared")
    retry_afters: list[float | None] = []
    for i in range(30):
        try:
            await (limit_a if i % 2 else limit_b).acquire()
        except RateLimited as exc:
            retry_afters.append(exc.retry_after)
    assert len(retry_afters) == 20
    assert all(r is not None and 0 < r <= 100.0 for r in retry_afters)
    assert limit_a.accepted + limit_b.accepted == 10
    assert a.errors == b.errors == 0


@pytest.mark.redis
async def test_script_is_atomic_under_concurrent_callers(
    client: Redis, two_stores: tuple[RedisStore, RedisStore]
) -> None:
    a, b = two_stores
    decisions = await asyncio.gather(
        *(store.acquire("hot", 100.0, 2500.0, 1.0) for _ in range(100) for store in (a, b))
    )
    assert a.errors == b.errors == 0
    assert sum(d.allowed for d in decisions) == 25


@pytest.mark.redis
async def test_script_reloads_after_script_flush(client: Redis, redis_port: int) -> None:
    store = RedisStore(url=f"redis://127.0.0.1:{redis_port}/0")
    assert (await store.acquire("k", T, TAU, 1.0)).allowed
    await client.script_flush()
    assert (await store.acquire("k", T, TAU, 1.0)).allowed
    assert store.errors == 0
    await store.aclose()


def _down_store(on_error: str, clock: ManualClock, hooks: RecordingHooks) -> RedisStore:
    return RedisStore(
        url=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        on_error=on_error,  # type: ignore[arg-type]
        clock=clock,
        hooks=hooks,
        name="rl-redis",
    )


async def test_redis_down_falls_back_to_local_limit(
    clock: ManualClock, hooks: RecordingHooks
) -> None:
    store = _down_store("local", clock, hooks)
    rl = RateLimiter(4, burst=4, store=store, clock=clock)
    for _ in range(4):
        await rl.acquire()
    with pytest.raises(RateLimited) as info:
        await rl.acquire()
    assert info.value.retry_after == 0.25
    # One failed attempt, then Redis is skipped for retry_interval (1 s).
    assert store.errors == 1
    assert not store.healthy
    assert rl.snapshot()["store_errors"] == 1
    assert rl.snapshot()["keys"] == 1
    assert hooks.events == [("store", "rl-redis", "store_error", 1.0)]
    clock.step(1.0)
    await rl.acquire()
    assert store.errors == 2
    await store.aclose()


async def test_redis_down_allow_and_deny(clock: ManualClock, hooks: RecordingHooks) -> None:
    allow = _down_store("allow", clock, hooks)
    rl = RateLimiter(1, burst=1, store=allow, clock=clock)
    for _ in range(5):
        await rl.acquire()
    deny = _down_store("deny", clock, hooks)
    rl = RateLimiter(1, burst=1, store=deny, clock=clock)
    with pytest.raises(RateLimited) as info:
        await rl.acquire()
    assert info.value.retry_after == 1.0
    assert (allow.errors, deny.errors) == (1, 1)
    with pytest.raises(ValueError, match="on_error"):
        _down_store("explode", clock, hooks)
    await allow.aclose()
    await deny.aclose()
