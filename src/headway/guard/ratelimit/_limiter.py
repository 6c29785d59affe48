"""The rate limiter guard: GCRA per key, over a memory (default) or shared Redis store.

What it guarantees: per key, over any window of ``w`` seconds, at most ``burst + rate * w /
period`` cost units are admitted (GCRA's bound, see ``headway.store._gcra``), exactly, with no
background refill task. A rejection raises :class:`RateLimited` with ``retry_after`` = seconds
until the same cost would be admitted. With the memory store the admitted path is a plain
function call (no ``await`` beyond the ``async with`` itself).

Costs need not be 1: a tokens-per-minute quota charges the estimated prompt tokens up front
(``acquire(cost=estimate)``) and corrects with ``adjust(key, actual - estimate)`` afterwards; a
positive correction is always applied (the key may go into debt, which later calls wait off),
a negative one refunds. A cost larger than ``burst`` can never be admitted: it is rejected at
once with ``RateLimited(reason="cost_exceeds_burst", retry_after=None)``, since no wait helps.

``wait=True`` turns rejection into queueing (like aiolimiter): the call *reserves* its slot in
the same atomic step (the TAT moves forward now, so waiters are served in arrival order and
never race each other) and sleeps until its slot, as long as that is within ``max_wait`` and the
request's deadline; otherwise it is rejected at once. A waiter that is cancelled refunds its
reservation.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Final, TypeVar, cast

from headway.core import (
    NO_HOOKS,
    REAL_CLOCK,
    Clock,
    Guard,
    Hooks,
    RateLimited,
    Service,
    current_context,
)
from headway.core._ready import DONE
from headway.store import Decision, LimitStore, MemoryStore, SyncLimitStore

Req = TypeVar("Req")
Resp = TypeVar("Resp")

KeyFn = Callable[[Any], str]
CostFn = Callable[[Any], float]

DEFAULT_KEY: Final = "default"
# Waiting with neither max_wait nor a deadline is unbounded (as in aiolimiter); the store still
# needs a finite number.
_UNBOUNDED_WAIT: Final = 1e9


def tenant_key(request: object = None) -> str:
    """Key by the current request's tenant (``current_context().tenant``), else ``"default"``."""
    tenant = current_context().tenant
    return DEFAULT_KEY if tenant is None else tenant


class RateLimiter(Guard):
    """Admits at most ``rate`` cost units per ``period`` seconds per key, with bursts of
    ``burst``.

    ``burst`` defaults to one period's worth (``max(1, rate)``), the bucket size of aiolimiter's
    ``AsyncLimiter(max_rate, time_period)`` and the per-window allowance of a fixed window.
    ``key`` is a fixed string or ``key(request) -> str`` (``request`` is None under
    ``async with``), e.g. :func:`tenant_key`; ``cost`` is a number or ``cost(request) ->
    float`` (``async with`` uses a numeric cost, or 1). ``namespace`` prefixes every key, so
    limiters sharing one store (an RPM and a TPM limit per tenant) never collide.
    """

    kind = "ratelimit"

    def __init__(
        self,
        rate: float,
        period: float = 1.0,
        burst: float | None = None,
        *,
        store: LimitStore | None = None,
        key: str | KeyFn | None = None,
        cost: float | CostFn = 1.0,
        namespace: str = "",
        wait: bool = False,
        max_wait: float | None = None,
        name: str = "ratelimit",
        hooks: Hooks = NO_HOOKS,
        clock: Clock = REAL_CLOCK,
    ) -> None:
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError(f"rate must be a positive number, got {rate}")
        if not period > 0 or not math.isfinite(period):
            raise ValueError(f"period must be a positive number of seconds, got {period}")
        if burst is None:
            burst = max(1.0, float(rate))
        if not burst >= 1 or not math.isfinite(burst):
            raise ValueError(f"burst must be >= 1, got {burst}")
        self.rate = float(rate)
        self.period = float(period)
        self.burst = float(burst)
        #: Seconds per cost unit (GCRA's T).
        self.emission_interval = self.period / self.rate
        #: How far a key's TAT may run ahead of now (GCRA's tau = burst * T).
        self.tolerance = self.burst * self.emission_interval
        if store is None:
            store = MemoryStore(clock=clock)
        self._store = store
        self._sync_store = cast(SyncLimitStore, store) if store.sync else None
        self._namespace = namespace
        if callable(key):
            self._key_fn: KeyFn | None = key
            self._key = namespace + DEFAULT_KEY
        else:
            self._key_fn = None
            self._key = namespace + (DEFAULT_KEY if key is None else key)
        if callable(cost):
            self._cost_fn: CostFn | None = cost
            self._cost = 1.0
        else:
            self._cost_fn = None
            self._cost = self._check_cost(cost)
        self._wait = wait
        self._max_wait = math.inf if max_wait is None else max_wait
        self.name = name
        self._hooks = hooks
        self._clock = clock
        self.accepted = 0
        self.rejected = 0
        self.waited = 0

    # -- the three ways in: around a block, around a service, or asked directly ---------------

    def __aenter__(self) -> Awaitable[None]:
        # A plain method: the admitted path returns a finished awaitable, no coroutine.
        key = self._key if self._key_fn is None else self._namespace + self._key_fn(None)
        store = self._sync_store
        if store is not None and (
            store.admit(key, self.emission_interval, self.tolerance, self._cost, self._clock.now())
            == 0.0
        ):
            self.accepted += 1
            return DONE
        return self._acquire_none(key, self._cost)

    async def _acquire_none(self, key: str, cost: float) -> None:
        await self._acquire(key, cost)

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Awaitable[None]:
        return DONE

    async def call(self, inner: Service[Req, Resp], request: Req) -> Resp:
        key = self._key if self._key_fn is None else self._namespace + self._key_fn(request)
        cost = self._cost if self._cost_fn is None else self._check_cost(self._cost_fn(request))
        store = self._sync_store
        if store is not None and (
            store.admit(key, self.emission_interval, self.tolerance, cost, self._clock.now()) == 0.0
        ):
            self.accepted += 1
        else:
            await self._acquire(key, cost)
        return await inner(request)

    async def acquire(self, key: str | None = None, cost: float | None = None) -> Decision:
        """Admit ``cost`` units for ``key`` or raise :class:`RateLimited`."""
        return await self._acquire(self._full_key(key), self._cost_of(cost))

    def try_acquire(self, key: str | None = None, cost: float | None = None) -> Decision:
        """Admit or refuse at once, without raising or waiting; memory-like stores only."""
        store = self._sync_store
        if store is None:
            store = self._require_sync()
        decision = store.acquire_nowait(
            self._key if key is None and self._key_fn is None else self._full_key(key),
            self.emission_interval,
            self.tolerance,
            self._cost if cost is None else self._check_cost(cost),
            self._clock.now(),
        )
        if decision[0]:
            self.accepted += 1
        else:
            self._count_rejection()
        return decision

    async def adjust(self, key: str | None, delta: float) -> Decision:
        """Correct a charge after the fact: ``delta > 0`` charges more (may go into debt, never
        rejects), ``delta < 0`` refunds (never beyond a fresh key)."""
        store = self._sync_store
        full_key = self._full_key(key)
        if store is not None:
            return store.adjust_nowait(
                full_key, self.emission_interval, self.tolerance, delta, self._clock.now()
            )
        return await self._store.adjust(
            full_key, self.emission_interval, self.tolerance, delta, self._clock.now()
        )

    def adjust_nowait(self, key: str | None, delta: float) -> Decision:
        """:meth:`adjust` as a plain call; memory-like stores only."""
        return self._require_sync().adjust_nowait(
            self._full_key(key), self.emission_interval, self.tolerance, delta, self._clock.now()
        )

    async def charge(self, key: str | None, cost: float) -> Decision:
        """Charge ``cost`` more units, admitted or not (e.g. actual usage above the estimate)."""
        return await self.adjust(key, self._check_cost(cost))

    async def refund(self, key: str | None, cost: float) -> Decision:
        """Give back ``cost`` units charged earlier (e.g. an over-estimate)."""
        return await self.adjust(key, -self._check_cost(cost))

    # -- observability -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, float]:
        return {
            "accepted": self.accepted,
            "rejected": self.rejected,
            "waited": self.waited,
            "keys": self._store.tracked_keys(),
            "store_errors": self._store.errors,
            "rate": self.rate,
            "period": self.period,
            "burst": self.burst,
        }

    @property
    def store(self) -> LimitStore:
        return self._store

    # -- the slow path: full decision, waiting, rejection ----------------------------------------

    async def _acquire(self, key: str, cost: float) -> Decision:
        if cost > self.burst:
            self._count_rejection()
            raise RateLimited(
                f"cost {cost} exceeds burst {self.burst} of rate limiter {self.name!r}",
                retry_after=None,
                reason="cost_exceeds_burst",
            )
        now = self._clock.now()
        if self._wait:
            budget = min(self._max_wait, current_context().deadline - now)
            if budget > 0:
                return await self._reserve(key, cost, min(budget, _UNBOUNDED_WAIT), now)
        decision = await self._step(key, cost, self.tolerance, now)
        if decision.allowed:
            self.accepted += 1
            return decision
        raise self._rejection(key, decision.retry_after)

    async def _reserve(self, key: str, cost: float, budget: float, now: float) -> Decision:
        # The enlarged tolerance admits a cost up to `budget` seconds early; the caller then
        # sleeps until its real slot, which the step already reserved.
        decision = await self._step(key, cost, self.tolerance + budget, now)
        if not decision.allowed:
            raise self._rejection(key, decision.retry_after + budget)
        delay = decision.reset_after - self.tolerance
        if delay > 0:
            self.waited += 1
            interrupted: BaseException | None = None
            try:
                await self._clock.sleep(delay)
            except BaseException as error:
                interrupted = error
            if interrupted is not None:  # the reserved slot goes back (awaited out of the
                # handler: see tests/unit/test_native.py)
                await self.adjust(key[len(self._namespace) :], -cost)
                raise interrupted
            self.accepted += 1
            return Decision(True, 0.0, 0.0, self.tolerance)
        self.accepted += 1
        remaining = (self.tolerance - decision.reset_after) / self.emission_interval
        return Decision(True, 0.0, max(0.0, remaining), decision.reset_after)

    async def _step(self, key: str, cost: float, tolerance: float, now: float) -> Decision:
        store = self._sync_store
        if store is not None:
            return store.acquire_nowait(key, self.emission_interval, tolerance, cost, now)
        return await self._store.acquire(key, self.emission_interval, tolerance, cost, now)

    def _rejection(self, key: str, retry_after: float) -> RateLimited:
        self._count_rejection()
        return RateLimited(
            f"rate limit {self.name!r} exceeded for key {key!r}",
            retry_after=retry_after,
        )

    def _count_rejection(self) -> None:
        self.rejected += 1
        self._hooks.on_event(self.kind, self.name, "rejected", 1.0)

    # -- helpers -------------------------------------------------------------------------------

    def _full_key(self, key: str | None) -> str:
        if key is not None:
            return self._namespace + key
        if self._key_fn is None:
            return self._key
        return self._namespace + self._key_fn(None)

    def _cost_of(self, cost: float | None) -> float:
        return self._cost if cost is None else self._check_cost(cost)

    @staticmethod
    def _check_cost(cost: float) -> float:
        if not cost >= 0 or not math.isfinite(cost):
            raise ValueError(f"cost must be a finite number >= 0, got {cost}")
        return float(cost)

    def _require_sync(self) -> SyncLimitStore:
        store = self._sync_store
        if store is None:
            raise TypeError(
                f"{type(self._store).__name__} needs I/O; use 'await limiter.acquire()' instead"
            )
        return store

    def __repr__(self) -> str:
        return (
            f"RateLimiter(rate={self.rate}, period={self.period}, burst={self.burst}, "
            f"name={self.name!r})"
        )
