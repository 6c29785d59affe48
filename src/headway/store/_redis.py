"""Shared rate-limit state in Redis, for limits that hold across gateway instances.

Each step is one ``EVALSHA`` of the GCRA script (``_redis_script.py``; redis-py reloads it on
``NOSCRIPT``), so concurrent callers on any number of connections never overspend a key.

When Redis fails (connection refused, timeout, any Redis error) the store does what
``on_error`` says and counts the failure in ``errors`` (and a ``"store_error"`` hook event):

- ``"local"`` (default; ARCHITECTURE: "local fallback when Redis is down"): the same limit is
  enforced per instance by an in-process :class:`MemoryStore`. With N instances the global rate
  can reach N times the limit during the outage, but no instance is unlimited.
- ``"allow"``: fail open, admit everything (availability over the limit).
- ``"deny"``: fail closed, reject with ``retry_after = error_retry_after``.

After a failure Redis is not tried again for ``retry_interval`` seconds, so an outage costs one
timeout per interval rather than one per request.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError

from headway.core import NO_HOOKS, REAL_CLOCK, Clock, Hooks

from ._gcra import Decision
from ._memory import MemoryStore
from ._redis_script import GCRA_SCRIPT

OnError = Literal["allow", "deny", "local"]

DEFAULT_PREFIX = "headway:rl:"
# Our choice: a limiter check must stay cheap; a healthy Redis on the same network answers in
# well under a millisecond, so 250 ms means it is unhealthy.
DEFAULT_SOCKET_TIMEOUT = 0.25
# Our choice: probe a failed Redis at most once a second.
DEFAULT_RETRY_INTERVAL = 1.0


class RedisStore:
    """:class:`~headway.store.LimitStore` backed by Redis (``redis.asyncio``)."""

    sync = False

    def __init__(
        self,
        client: Redis | None = None,
        *,
        url: str = "redis://127.0.0.1:6379/0",
        prefix: str = DEFAULT_PREFIX,
        on_error: OnError = "local",
        fallback: MemoryStore | None = None,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        error_retry_after: float = DEFAULT_RETRY_INTERVAL,
        name: str = "redis",
        hooks: Hooks = NO_HOOKS,
        clock: Clock = REAL_CLOCK,
    ) -> None:
        if on_error not in ("allow", "deny", "local"):
            raise ValueError(f"on_error must be 'allow', 'deny' or 'local', got {on_error!r}")
        self._owns_client = client is None
        if client is None:
            client = Redis.from_url(
                url,
                socket_timeout=DEFAULT_SOCKET_TIMEOUT,
                socket_connect_timeout=DEFAULT_SOCKET_TIMEOUT,
            )
        self.client = client
        self.prefix = prefix
        self.on_error = on_error
        self.fallback = fallback if fallback is not None else MemoryStore(clock=clock)
        self.retry_interval = retry_interval
        self.error_retry_after = error_retry_after
        self.name = name
        self._hooks = hooks
        self._clock = clock
        self._script = client.register_script(GCRA_SCRIPT)
        self._down_until = -math.inf
        self.errors = 0

    async def acquire(
        self,
        key: str,
        emission_interval: float,
        tolerance: float,
        cost: float = 1.0,
        now: float | None = None,
    ) -> Decision:
        return await self._run(key, emission_interval, tolerance, cost, False)

    async def adjust(
        self,
        key: str,
        emission_interval: float,
        tolerance: float,
        delta: float,
        now: float | None = None,
    ) -> Decision:
        return await self._run(key, emission_interval, tolerance, delta, True)

    async def _run(
        self, key: str, emission_interval: float, tolerance: float, cost: float, force: bool
    ) -> Decision:
        if self._clock.now() < self._down_until:
            return self._degraded(key, emission_interval, tolerance, cost, force)
        try:
            reply: Any = await self._script(
                keys=(self.prefix + key,),
                args=(repr(emission_interval), repr(tolerance), repr(cost), "1" if force else "0"),
            )
        except (RedisError, OSError):  # OSError covers TimeoutError
            self.errors += 1
            self._down_until = self._clock.now() + self.retry_interval
            self._hooks.on_event("store", self.name, "store_error")
            return self._degraded(key, emission_interval, tolerance, cost, force)
        return Decision(int(reply[0]) == 1, float(reply[1]), float(reply[2]), float(reply[3]))

    def _degraded(
        self, key: str, emission_interval: float, tolerance: float, cost: float, force: bool
    ) -> Decision:
        if self.on_error == "local":
            now = self._clock.now()
            fallback = self.fallback
            if force:
                return fallback.adjust_nowait(key, emission_interval, tolerance, cost, now)
            return fallback.acquire_nowait(key, emission_interval, tolerance, cost, now)
        if self.on_error == "allow" or force:
            return Decision(True, 0.0, tolerance / emission_interval, 0.0)
        return Decision(False, self.error_retry_after, 0.0, 0.0)

    @property
    def healthy(self) -> bool:
        """False while Redis is being skipped after a failure."""
        return self._clock.now() >= self._down_until

    def tracked_keys(self) -> int:
        """Keys held in this process: those of the local fallback (Redis keys are shared)."""
        return self.fallback.tracked_keys()

    async def aclose(self) -> None:
        if self._owns_client:
            await self.client.aclose()

    def __repr__(self) -> str:
        return f"RedisStore(prefix={self.prefix!r}, on_error={self.on_error!r})"
