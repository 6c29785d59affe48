"""Priority admission with load shedding: who gets a slot when there are not enough.

The capacity comes from any :class:`LimitAlgorithm` (fixed, AIMD, Gradient2); this guard counts
requests in flight against it, keeps a bounded waiting room, and decides whom to refuse.

Guarantees:

- Below the limit a request is admitted at once (no await, no allocation when neither an
  adaptive limit nor a per-tenant cap is configured).
- At the limit, a request waits in a queue of at most ``max_queue``. When the queue is full the
  *lowest* priority goes first: an arrival of higher priority evicts the newest waiter of the
  lowest queued priority; an arrival that is itself of the lowest queued priority (or lower) is
  refused. A freed slot goes to the highest priority waiting, and within a priority tenants take
  turns (round-robin over per-tenant FIFOs).
- Per-tenant cap (``max_per_tenant``): in-flight plus queued requests of one tenant never exceed
  it. An int is a count; a float in (0, 1] a fraction of the shedder's whole capacity
  (``limit + max_queue``), rounded up, at least 1. Requests without a tenant share the tenant
  ``None``. Off by default (a single-tenant service would otherwise cap itself); Google SRE
  ch. 22 suggests capping one client at about 25% of the threads.
- Queue *delay* drives shedding (CoDel, see ``_codel``): while the minimum queueing delay of an
  interval stays above ``target_delay`` the shedder is *overloaded*; then a waiter is shed the
  moment its wait reaches ``2 * target_delay``, and arrivals at or below ``shed_priority`` are
  refused at once instead of queueing. Shedding follows SRE's rule (ch. 21) that a priority is
  only rejected once every lower one is: shedding a waiter of priority p also sheds every queued
  waiter below p. The state returns to normal at the first interval whose minimum delay is back
  under target (an empty queue counts as zero delay).
- Deadlines: a request whose deadline leaves less than ``min_time_to_serve`` is refused instead
  of queueing, and a waiter is dropped at exactly ``deadline - min_time_to_serve`` by a timer on
  the clock (no polling), so nobody waits past the point where serving it is useless.
- Every refusal is an :class:`Overloaded` with a ``reason`` (``shed``, ``queue_full``,
  ``queue_delay``, ``deadline``, ``tenant_limit``) and a ``retry_after``: the requests ahead
  (queued + 1) divided by the recent completion rate (Little's law), at least ``interval`` and
  at most ``max_retry_after``; the interval alone until a rate is known.
- Exactly-once slots: a freed slot is handed to exactly one live waiter; a waiter cancelled
  while queued leaves the queue; one cancelled in the instant a slot was handed to it passes the
  slot on. Each finished request feeds ``on_sample(start, rtt, inflight, dropped)`` to the
  algorithm (not a cancelled one: its latency means nothing).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import math
from collections.abc import Hashable
from types import TracebackType
from typing import Final, TypeVar

from headway.core import (
    NO_HOOKS,
    REAL_CLOCK,
    Clock,
    Context,
    DeadlineExceeded,
    Guard,
    Hooks,
    Overloaded,
    Priority,
    Rejected,
    Service,
    TimerHandle,
    UpstreamError,
    UpstreamTimeout,
    current_context,
)
from headway.guard.concurrency._limit import FixedLimit, LimitAlgorithm
from headway.guard.concurrency._rate import CompletionRate

from ._codel import DEFAULT_INTERVAL, DEFAULT_TARGET, QueueDelayDetector
from ._queue import FairQueue, QueuedRequest

Req = TypeVar("Req")
Resp = TypeVar("Resp")

REASONS: Final = ("shed", "queue_full", "queue_delay", "deadline", "tenant_limit")

# Netflix concurrency-limits LifoBlockingLimiter's default backlog size: 100 (HEAD 78a74b9).
DEFAULT_MAX_QUEUE: Final = 100
# Our choice: a retry hint longer than a minute is better expressed by failing over elsewhere.
DEFAULT_MAX_RETRY_AFTER: Final = 60.0
# Timers and subtraction can land a few ulps short of an exact threshold.
_EPSILON: Final = 1e-9

_QUEUED, _ADMITTED, _REJECTED, _GONE = 0, 1, 2, 3
_SHED_EVENT: Final = {p: "shed." + p.name.lower() for p in Priority}
_REJECT_EVENT: Final = {r: "rejected." + r for r in REASONS}


def _is_drop(error: BaseException) -> bool:
    """Failures that say "overloaded" to the limit algorithm: timeouts, a refusal from further
    down, an upstream 429/503. Other failures say nothing about capacity."""
    if isinstance(error, UpstreamError):
        return isinstance(error, UpstreamTimeout) or error.status in (429, 503)
    return isinstance(error, DeadlineExceeded | Rejected)


class _Waiter(QueuedRequest):
    def __init__(
        self, priority: int, tenant: Hashable, enqueued_at: float, future: asyncio.Future[object]
    ) -> None:
        super().__init__(priority, tenant, enqueued_at)
        #: Resolves to ``None`` (admitted) or the :class:`Overloaded` to raise.
        self.future = future
        self.state = _QUEUED
        self.timer: TimerHandle | None = None


class _Permit:
    """What ``__aexit__`` needs from ``__aenter__``, kept per task; ``outer`` is the permit of
    an enclosing ``async with`` on the same shedder in the same task."""

    def __init__(
        self, start: float, inflight: int, tenant: Hashable, outer: _Permit | None
    ) -> None:
        self.start = start
        self.inflight = inflight
        self.tenant = tenant
        self.outer = outer


class LoadShedder(Guard):
    """Admit up to the limit, queue fairly by priority and tenant, shed the least important.

    ``async with shedder:``, ``shedder.wrap(service)``, ``@shedder`` or ``await
    shedder.call(service, request)``. Priority, tenant and deadline come from
    :func:`current_context`. See the module docstring for the exact rules.
    """

    kind = "shed"

    def __init__(
        self,
        limit: LimitAlgorithm | int,
        *,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_per_tenant: int | float | None = None,
        target_delay: float = DEFAULT_TARGET,
        interval: float = DEFAULT_INTERVAL,
        shed_priority: Priority = Priority.SHEDDABLE,
        min_time_to_serve: float = 0.0,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        name: str = "shed",
        clock: Clock = REAL_CLOCK,
        hooks: Hooks = NO_HOOKS,
    ) -> None:
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {max_queue}")
        if isinstance(max_per_tenant, bool) or (
            max_per_tenant is not None
            and not (
                (isinstance(max_per_tenant, int) and max_per_tenant >= 1)
                or (isinstance(max_per_tenant, float) and 0.0 < max_per_tenant <= 1.0)
            )
        ):
            raise ValueError(
                f"max_per_tenant must be an int >= 1 or a float in (0, 1], got {max_per_tenant!r}"
            )
        if min_time_to_serve < 0:
            raise ValueError(f"min_time_to_serve must be >= 0, got {min_time_to_serve}")
        if max_retry_after <= 0:
            raise ValueError(f"max_retry_after must be > 0, got {max_retry_after}")
        algorithm: LimitAlgorithm = FixedLimit(limit) if isinstance(limit, int) else limit
        self._algorithm = algorithm
        self._limit = algorithm.limit
        self._max_queue = max_queue
        self._max_per_tenant = max_per_tenant
        self._detector = QueueDelayDetector(target_delay, interval)
        self._shed_priority = shed_priority
        self._min_time_to_serve = min_time_to_serve
        self._max_retry_after = max_retry_after
        self.name = name
        self._clock = clock
        self._hooks = hooks
        # A fixed limit learns nothing from samples: skip timing on the admitted path.
        self._sampling = not isinstance(algorithm, FixedLimit)
        self._tenant_load: dict[Hashable, int] | None = None if max_per_tenant is None else {}
        self._tenant_cap = 0
        self._set_tenant_cap()
        # ``async with`` needs per-call state only when sampling or counting tenants.
        self._tracking = self._sampling or max_per_tenant is not None
        # Open ``async with`` blocks, per task (measured cheaper than a dict keyed by task).
        self._permit: contextvars.ContextVar[_Permit | None] = contextvars.ContextVar(
            "headway_shed_permit"
        )
        self._queue: FairQueue[_Waiter] = FairQueue(len(Priority))
        self._inflight = 0
        self._admitted = 0
        self._rejected = dict.fromkeys(REASONS, 0)
        self._last_delay = 0.0
        self._interval_timer: TimerHandle | None = None
        self._slough_timer: TimerHandle | None = None
        self._rate = CompletionRate(clock)
        algorithm.subscribe(self._on_limit)

    # -- view -----------------------------------------------------------------------------------

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def overloaded(self) -> bool:
        return self._detector.overloaded

    def snapshot(self) -> dict[str, float]:
        queue = self._queue
        snap: dict[str, float] = {
            "limit": self._limit,
            "inflight": self._inflight,
            "queued": len(queue),
            "max_queue": self._max_queue,
            "admitted": self._admitted,
            "completed": self._admitted - self._inflight,
            "rejected": sum(self._rejected.values()),
            "overloaded": 1.0 if self._detector.overloaded else 0.0,
            "queue_delay_last": self._last_delay,
            "queue_delay_min": self._detector.last_min,
            "load": self._detector.load,
        }
        for priority in Priority:
            snap["queued_" + priority.name.lower()] = queue.count(priority)
        for reason, count in self._rejected.items():
            snap["shed_" + reason] = count
        return snap

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, limit={self._limit}, "
            f"inflight={self._inflight}, queued={len(self._queue)})"
        )

    # -- use ------------------------------------------------------------------------------------

    async def call(self, inner: Service[Req, Resp], request: Req) -> Resp:
        tenant: Hashable = None
        if self._tenant_load is None and self._inflight < self._limit:
            self._inflight += 1
            self._admitted += 1
        else:
            ctx = current_context()
            tenant = ctx.tenant
            waiter = self._try_admit(ctx)
            if waiter is not None:
                await self._wait(waiter)
        if not self._sampling:
            try:
                return await inner(request)
            finally:
                if tenant is None and self._tenant_load is None:
                    self._inflight -= 1
                    if self._queue.size:
                        self._dispatch()
                else:
                    self._release(tenant)
        inflight = self._inflight
        start = self._clock.now()
        try:
            result = await inner(request)
        except asyncio.CancelledError:
            self._release(tenant)
            raise
        except BaseException as exc:
            self._release(tenant)
            self._sample(start, inflight, _is_drop(exc))
            raise
        self._release(tenant)
        self._sample(start, inflight, False)
        return result

    def enter_now(self) -> bool:
        """Enter at once, as ``__aenter__`` does when nothing makes it wait (no tenant cap, room
        under the limit: the common case), without a coroutine; False: ``await __aenter__()``.
        Leave with :meth:`leave` either way."""
        if self._tenant_load is not None or self._inflight >= self._limit:
            return False
        self._inflight += 1
        self._admitted += 1
        if self._tracking:
            var = self._permit
            var.set(_Permit(self._clock.now(), self._inflight, None, var.get(None)))
        return True

    async def __aenter__(self) -> LoadShedder:
        if self.enter_now():
            return self
        ctx = current_context()
        tenant = ctx.tenant
        waiter = self._try_admit(ctx)
        if waiter is not None:
            await self._wait(waiter)
        if self._tracking:
            var = self._permit
            var.set(_Permit(self._clock.now(), self._inflight, tenant, var.get(None)))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.leave(exc)

    def leave(self, exc: BaseException | None = None) -> None:
        """Leave the block entered with ``async with``/``__aenter__`` (what ``__aexit__`` does,
        as a plain call; ``exc`` is the block's error, if any)."""
        if not self._tracking:  # the bulkhead case: nothing to sample, no tenant to count
            self._inflight -= 1
            if self._queue.size:
                self._dispatch()
            return
        var = self._permit
        permit = var.get(None)
        if permit is None:  # pragma: no cover - exit without a matching enter
            raise RuntimeError("LoadShedder.__aexit__ without __aenter__ in this task")
        var.set(permit.outer)
        self._release(permit.tenant)
        if self._sampling and not isinstance(exc, asyncio.CancelledError):
            self._sample(permit.start, permit.inflight, exc is not None and _is_drop(exc))

    # -- admission --------------------------------------------------------------------------------

    def _try_admit(self, ctx: Context) -> _Waiter | None:
        """Admit at once (``None``), queue (the waiter to await) or raise :class:`Overloaded`."""
        priority = ctx.priority
        tenant = ctx.tenant
        load = self._tenant_load
        if load is not None:
            if load.get(tenant, 0) >= self._tenant_cap:
                raise self._refuse("tenant_limit", priority)
            load[tenant] = load.get(tenant, 0) + 1
        try:
            if self._inflight < self._limit:  # room means the queue is empty: nobody to pass
                self._inflight += 1
                self._admitted += 1
                return None
            return self._enqueue(ctx, priority, tenant)
        except BaseException:
            self._untrack(tenant)
            raise

    def _enqueue(self, ctx: Context, priority: Priority, tenant: Hashable) -> _Waiter:
        clock = self._clock
        now = clock.now()
        drop_at = ctx.deadline - self._min_time_to_serve
        if drop_at <= now:
            raise self._refuse("deadline", priority)
        if self._detector.overloaded and priority <= self._shed_priority:
            raise self._refuse("shed", priority)
        queue = self._queue
        if len(queue) >= self._max_queue:
            lowest = queue.lowest()
            if lowest is None or lowest >= priority:
                raise self._refuse("queue_full", priority)
            victim = queue.newest(lowest)
            assert victim is not None
            self._reject_waiter(victim, "queue_full")
        waiter = _Waiter(priority, tenant, now, asyncio.get_running_loop().create_future())
        if drop_at != math.inf:
            waiter.timer = clock.call_later(
                drop_at - now, functools.partial(self._on_deadline, waiter)
            )
        queue.push(waiter)
        if self._interval_timer is None:
            self._detector.start_interval()
            self._interval_timer = clock.call_later(self._detector.interval, self._on_interval)
        if self._detector.overloaded and self._slough_timer is None:
            self._slough_timer = clock.call_later(self._detector.drop_after, self._on_slough)
        return waiter

    async def _wait(self, waiter: _Waiter) -> None:
        try:
            error = await waiter.future
        except asyncio.CancelledError:
            if waiter.state == _QUEUED:
                self._discard(waiter)
            elif waiter.state == _ADMITTED:
                # Cancelled in the instant a slot was handed over: pass it on.
                self._release(waiter.tenant)
            raise
        if error is not None:
            raise error  # type: ignore[misc]

    # -- release --------------------------------------------------------------------------------

    def _release(self, tenant: Hashable) -> None:
        self._inflight -= 1
        if self._tenant_load is not None:
            self._untrack(tenant)
        if self._queue.size:
            self._dispatch()

    def _sample(self, start: float, inflight: int, dropped: bool) -> None:
        self._algorithm.on_sample(start, self._clock.now() - start, inflight, dropped)

    def _dispatch(self) -> None:
        """Hand free slots to waiters, best first, one slot per live waiter."""
        queue = self._queue
        while self._inflight < self._limit:
            waiter = queue.pop()
            if waiter is None:
                break
            if waiter.timer is not None:
                waiter.timer.cancel()
            if waiter.future.done():  # its task was cancelled; its handler has not run yet
                waiter.state = _GONE
                self._untrack(waiter.tenant)
                continue
            delay = self._clock.now() - waiter.enqueued_at
            self._last_delay = delay
            self._detector.observe(delay)
            waiter.state = _ADMITTED
            self._inflight += 1
            self._admitted += 1
            waiter.future.set_result(None)
        if not queue:
            self._detector.observe(0.0)

    def _on_limit(self, limit: int) -> None:
        self._limit = limit
        self._set_tenant_cap()
        self._hooks.on_event(self.kind, self.name, "limit", limit)
        if self._queue:
            self._dispatch()

    # -- shedding -------------------------------------------------------------------------------

    def _on_interval(self) -> None:
        """End of a CoDel interval: judge it, shed if overloaded, keep ticking while needed."""
        self._interval_timer = None
        detector = self._detector
        now = self._clock.now()
        head = self._queue.peek()
        # What the next dequeue would measure; an empty queue is zero delay.
        detector.observe(0.0 if head is None else now - head.enqueued_at)
        if detector.close_interval():
            event = "state.overloaded" if detector.overloaded else "state.normal"
            self._hooks.on_event(self.kind, self.name, event, detector.last_min)
        if detector.overloaded:
            self._slough(now)
        elif self._slough_timer is not None:
            self._slough_timer.cancel()
            self._slough_timer = None
        if self._queue or detector.overloaded:
            self._interval_timer = self._clock.call_later(detector.interval, self._on_interval)

    def _on_slough(self) -> None:
        self._slough_timer = None
        if self._detector.overloaded:
            self._slough(self._clock.now())

    def _slough(self, now: float) -> None:
        """Shed every waiter whose wait reached 2 x target, and everything queued below it."""
        queue = self._queue
        drop_after = self._detector.drop_after
        cutoff = now - drop_after + _EPSILON  # enqueued at or before: waited long enough
        top = None
        for priority in reversed(range(len(Priority))):
            oldest = queue.oldest(priority)
            if oldest is not None and oldest.enqueued_at <= cutoff:
                top = priority
                break
        if top is not None:
            for priority in range(top):
                for waiter in queue.waiters(priority):
                    self._reject_waiter(waiter, "queue_delay")
            for waiter in queue.waiters(top):
                if waiter.enqueued_at > cutoff:
                    break
                self._reject_waiter(waiter, "queue_delay")
        # Next crossing: the oldest remaining waiter of any level.
        first = math.inf
        for priority in range(len(Priority)):
            oldest = queue.oldest(priority)
            if oldest is not None and oldest.enqueued_at < first:
                first = oldest.enqueued_at
        if self._slough_timer is not None:
            self._slough_timer.cancel()
            self._slough_timer = None
        if first != math.inf:
            self._slough_timer = self._clock.call_later(
                max(0.0, first + drop_after - now), self._on_slough
            )

    def _on_deadline(self, waiter: _Waiter) -> None:
        waiter.timer = None
        if waiter.state == _QUEUED:
            self._reject_waiter(waiter, "deadline")

    def _reject_waiter(self, waiter: _Waiter, reason: str) -> None:
        self._discard(waiter)
        if waiter.future.done():  # already cancelled: nobody to tell
            return
        waiter.state = _REJECTED
        waiter.future.set_result(self._refuse(reason, Priority(waiter.priority)))

    def _discard(self, waiter: _Waiter) -> None:
        """Take a waiter out of the queue for good (rejected or cancelled)."""
        self._queue.remove(waiter)
        waiter.state = _GONE
        if waiter.timer is not None:
            waiter.timer.cancel()
            waiter.timer = None
        self._untrack(waiter.tenant)
        if not self._queue:
            self._detector.observe(0.0)

    def _refuse(self, reason: str, priority: Priority) -> Overloaded:
        self._rejected[reason] += 1
        hooks = self._hooks
        hooks.on_event(self.kind, self.name, _REJECT_EVENT[reason])
        hooks.on_event(self.kind, self.name, _SHED_EVENT[priority])
        return Overloaded(
            f"{self.name}: request shed ({reason})",
            retry_after=self._retry_after(),
            reason=reason,
        )

    def _retry_after(self) -> float:
        """Requests ahead divided by the completion rate (Little's law), clamped."""
        rate = self._rate.per_second(self._admitted - self._inflight)
        estimate = self._detector.interval
        if rate > 0.0:
            estimate = max(estimate, (len(self._queue) + 1) / rate)
        return min(self._max_retry_after, estimate)

    # -- tenants --------------------------------------------------------------------------------

    def _set_tenant_cap(self) -> None:
        cap = self._max_per_tenant
        if cap is None:
            return
        if isinstance(cap, float):
            self._tenant_cap = max(1, math.ceil(cap * (self._limit + self._max_queue)))
        else:
            self._tenant_cap = cap

    def _untrack(self, tenant: Hashable) -> None:
        load = self._tenant_load
        if load is None:
            return
        left = load[tenant] - 1
        if left:
            load[tenant] = left
        else:
            del load[tenant]
