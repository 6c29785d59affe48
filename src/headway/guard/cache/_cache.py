"""A TTL response cache with stale-while-revalidate, LRU bounds and coalesced misses.

Guarantees:

- A response is served from the cache for ``ttl`` seconds after it was stored (fresh). For a
  further ``stale_ttl`` seconds it is still served at once, while exactly one background
  refresh per key runs (RFC 5861 ``stale-while-revalidate``); a refresh that fails is counted
  and swallowed, and the stale value stays until its window ends. After that it is a miss.
- Misses are coalesced (:class:`~headway.guard.coalesce.Coalesce`): a burst of identical misses,
  and a refresh running at the same time, cost one upstream call.
- Only successful responses are stored, and only those ``should_cache`` accepts; an error is
  never cached, and every caller that shared the failed call gets the error.
- At most ``max_entries`` entries are held; the least recently used is evicted first.
- ``invalidate``/``clear`` win over calls already in flight: a response that was being fetched
  when the cache was invalidated is returned to its callers but not stored.
- Background refreshes are tracked tasks; ``aclose()`` cancels and awaits them all.

Refreshes run without any caller's deadline (no caller waits for them); bound them with a
timeout layer *below* the cache.
"""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Final, ParamSpec, TypeVar, cast

from headway.core import NO_HOOKS, REAL_CLOCK, Clock, Guard, Hooks, Service
from headway.guard.coalesce import Coalesce
from headway.guard.coalesce._detach import detached_context
from headway.guard.coalesce._keys import Invoke, call_key, missing_key

from ._lru import Entry, insert

Req = TypeVar("Req")
Resp = TypeVar("Resp")
T = TypeVar("T")
P = ParamSpec("P")

# A pending load: the service, its request, the key and the cache generation it started in.
_Job = tuple[Service[Any, Any], Any, Hashable, int]

# functools.lru_cache's default maxsize is 128 (CPython docs, functools.lru_cache).
DEFAULT_MAX_ENTRIES: Final = 128


class Cache(Guard):
    """Caches responses by ``key(request)``; ``None`` keys pass through uncached.

    As a decorator without ``key``, calls are keyed by function and arguments (calls with
    unhashable arguments pass through).
    As a decorator *with* ``key``, the request ``key`` receives is ``(args, kwargs)``.
    """

    kind = "cache"

    def __init__(
        self,
        key: Callable[[Any], Hashable | None] | None = None,
        *,
        ttl: float,
        # RFC 5861 makes stale-while-revalidate opt-in: no stale window unless asked for.
        stale_ttl: float = 0.0,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        should_cache: Callable[[Any], bool] | None = None,
        name: str = "cache",
        clock: Clock = REAL_CLOCK,
        hooks: Hooks = NO_HOOKS,
    ) -> None:
        if not ttl > 0:
            raise ValueError(f"ttl must be > 0 seconds, got {ttl}")
        if not stale_ttl >= 0:
            raise ValueError(f"stale_ttl must be >= 0 seconds, got {stale_ttl}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.name = name
        self._key: Callable[[Any], Hashable | None] = missing_key if key is None else key
        self._ttl = ttl
        self._stale_ttl = stale_ttl
        self._max_entries = max_entries
        self._should_cache = should_cache
        self._now = clock.now  # bound once: the hit path reads the time on every call
        self._hooks = hooks
        self._entries: OrderedDict[Hashable, Entry] = OrderedDict()
        self._fill = Coalesce(name=name + ".fill", clock=clock, hooks=hooks)
        self._load_service: Service[_Job, Any] = self._load
        self._refreshing: dict[Hashable, asyncio.Task[None]] = {}
        self._generation = 0
        self.hits = 0
        self.stale_hits = 0
        self.misses = 0
        self.bypassed = 0
        self.refreshes = 0
        self.refresh_errors = 0
        self.evictions = 0

    async def call(self, inner: Service[Req, Resp], request: Req) -> Resp:
        key = self._key(request)
        if key is None:
            self.bypassed += 1
            return await inner(request)
        # The fresh hit is inlined: it is the path that must stay cheap.
        entries = self._entries
        entry = entries.get(key)
        if entry is not None and self._now() < entry.fresh_until:
            entries.move_to_end(key)
            self.hits += 1
            return cast(Resp, entry.value)
        return await self.lookup(key, inner, request)

    async def lookup(self, key: Hashable, inner: Service[Req, Resp], request: Req) -> Resp:
        """Serve ``key`` from the cache, or fetch it with ``inner(request)`` and store it."""
        entries = self._entries
        entry = entries.get(key)
        if entry is not None:
            now = self._now()
            if now < entry.fresh_until:
                entries.move_to_end(key)
                self.hits += 1
                return cast(Resp, entry.value)
            if now < entry.stale_until:
                entries.move_to_end(key)
                self.stale_hits += 1
                if key not in self._refreshing:
                    self._start_refresh(key, inner, request)
                return cast(Resp, entry.value)
            del entries[key]
        self.misses += 1
        job: _Job = (inner, request, key, self._generation)
        return cast(Resp, await self._fill.run(key, self._load_service, job))

    async def _load(self, job: _Job) -> Any:
        inner, request, key, generation = job
        value = await inner(request)
        if generation == self._generation and (
            self._should_cache is None or self._should_cache(value)
        ):
            fresh_until = self._now() + self._ttl
            entry = Entry(value, fresh_until, fresh_until + self._stale_ttl)
            self.evictions += insert(self._entries, key, entry, self._max_entries)
        return value

    def _start_refresh(self, key: Hashable, inner: Service[Any, Any], request: Any) -> None:
        self.refreshes += 1
        job: _Job = (inner, request, key, self._generation)
        task = asyncio.get_running_loop().create_task(
            self._refresh(key, job), context=detached_context()
        )
        self._refreshing[key] = task
        task.add_done_callback(functools.partial(self._refresh_done, key))

    async def _refresh(self, key: Hashable, job: _Job) -> None:
        try:
            await self._fill.run(key, self._load_service, job)
        except Exception:
            # The stale value keeps being served; the error is the upstream's, not the caller's.
            self.refresh_errors += 1
            self._hooks.on_event(self.kind, self.name, "refresh_error")

    def _refresh_done(self, key: Hashable, task: asyncio.Task[None]) -> None:
        if self._refreshing.get(key) is task:
            del self._refreshing[key]

    def invalidate(self, key: Hashable) -> bool:
        """Drop ``key``; True if it was cached. A fetch already in flight will not store."""
        self._generation += 1
        self._fill.forget(key)
        return self._entries.pop(key, None) is not None

    def clear(self) -> None:
        """Drop every entry; fetches already in flight will not store."""
        self._generation += 1
        self._fill.forget_all()
        self._entries.clear()

    async def aclose(self) -> None:
        """Cancel background refreshes and in-flight fetches, and wait until they have ended."""
        tasks = list(self._refreshing.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._fill.aclose()

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        if self._key is not missing_key:
            return super().__call__(fn)
        lookup = self.lookup
        entries = self._entries
        now = self._now
        invoke = Invoke(fn)

        @functools.wraps(fn)
        async def cached(*args: P.args, **kwargs: P.kwargs) -> T:
            key = call_key(invoke, args, kwargs)
            if key is None:
                self.bypassed += 1
                return await fn(*args, **kwargs)
            entry = entries.get(key)
            if entry is not None and now() < entry.fresh_until:
                entries.move_to_end(key)
                self.hits += 1
                return cast(T, entry.value)
            return cast(T, await lookup(key, invoke, (args, kwargs)))

        return cached

    def snapshot(self) -> dict[str, float]:
        return {
            "hits": self.hits,
            "stale_hits": self.stale_hits,
            "misses": self.misses,
            "bypassed": self.bypassed,
            "loads": self._fill.leaders,
            "refreshes": self.refreshes,
            "refresh_errors": self.refresh_errors,
            "evictions": self.evictions,
            "entries": len(self._entries),
            "refreshing": len(self._refreshing),
        }

    def __repr__(self) -> str:
        return f"Cache(name={self.name!r}, entries={len(self._entries)}, ttl={self._ttl})"
