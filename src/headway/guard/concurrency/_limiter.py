"""The concurrency limiter: enforces a :class:`LimitAlgorithm`'s limit, with an optional queue.

One mechanism serves both the static bulkhead (``FixedLimit``) and adaptive limits (AIMD,
Gradient2): the algorithm says how many may be in flight; this guard counts, queues, hands slots
on and feeds the algorithm a latency sample per finished call (Netflix's Limit/Limiter split,
tower's ``ConcurrencyLimit``).

Guarantees:

- Below the limit a call is admitted at once, without awaiting (and, for a static limit,
  without allocating).
- At the limit a call waits in a FIFO queue of at most ``max_queue`` callers, or is rejected
  at once with :class:`Overloaded` (reason ``concurrency_limit`` with no queue, ``queue_full``).
- A wait never outlives the request's deadline (``current_context().deadline``, on this
  limiter's clock) nor ``queue_timeout``; a caller whose deadline has already passed is refused
  at once. Deadline expiry raises :class:`DeadlineExceeded`, a queue timeout ``Overloaded``
  (reason ``queue_timeout``).
- A freed slot passes straight to the oldest waiter (no thundering herd, no barging by new
  arrivals); a limit increase wakes as many waiters as it makes room for.
- Every slot taken is released exactly once, whether the caller finishes, fails, is cancelled
  while running, or is cancelled while waiting (even in the instant a slot was handed to it).
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Final, TypeVar

from headway.core import (
    NO_HOOKS,
    REAL_CLOCK,
    Clock,
    DeadlineExceeded,
    Guard,
    Hooks,
    Overloaded,
    Service,
    UpstreamError,
    UpstreamTimeout,
    current_context,
)
from headway.core._ready import DONE as _DONE

from ._limit import FixedLimit, LimitAlgorithm
from ._rate import CompletionRate

Req = TypeVar("Req")
Resp = TypeVar("Resp")


_REJECTED_LIMIT: Final = "rejected.concurrency_limit"
_REJECTED_QUEUE_FULL: Final = "rejected.queue_full"
_REJECTED_QUEUE_TIMEOUT: Final = "rejected.queue_timeout"
_REJECTED_DEADLINE: Final = "rejected.deadline"


def is_overload_signal(error: BaseException) -> bool:
    """Whether a failed call says "the thing behind me is overloaded" (a *drop* for the limit
    algorithm): a deadline or upstream timeout, an ``Overloaded`` from further down, or an
    upstream 429/503. Other failures (a 400, a bug) say nothing about capacity."""
    if isinstance(error, UpstreamError):
        return isinstance(error, UpstreamTimeout) or error.status in (429, 503)
    return isinstance(error, DeadlineExceeded | Overloaded)


class ConcurrencyLimiter(Guard):
    """At most ``limit`` calls in flight; ``async with limiter:`` or as a layer/decorator.

    ``limit`` is a :class:`LimitAlgorithm` or an int (a :class:`FixedLimit`). ``max_queue``
    callers may wait FIFO for a slot (0: reject at once), each for at most ``queue_timeout``
    seconds (``None``: until a slot frees or the request's deadline passes). ``is_drop`` decides
    which failures count as overload signals for adaptive algorithms.

    ``retry_after`` on a rejection is the caller's place in line divided by the recent completion
    rate (Little's law: slots free up at the rate calls complete), measured over windows of at
    least 1 s; ``None`` until the first call has completed.
    """

    kind = "concurrency"

    def __init__(
        self,
        limit: LimitAlgorithm | int,
        *,
        max_queue: int = 0,
        queue_timeout: float | None = None,
        clock: Clock = REAL_CLOCK,
        name: str = "concurrency",
        hooks: Hooks = NO_HOOKS,
        is_drop: Callable[[BaseException], bool] = is_overload_signal,
    ) -> None:
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {max_queue}")
        if queue_timeout is not None and queue_timeout < 0:
            raise ValueError(f"queue_timeout must be >= 0, got {queue_timeout}")
        algorithm: LimitAlgorithm = FixedLimit(limit) if isinstance(limit, int) else limit
        self._algorithm = algorithm
        self._limit = algorithm.limit
        # A fixed limit learns nothing from samples, so the bulkhead skips timing altogether.
        self._sampling = not isinstance(algorithm, FixedLimit)
        self._max_queue = max_queue
        self._queue_timeout = math.inf if queue_timeout is None else queue_timeout
        self._clock = clock
        self.name = name
        self._hooks = hooks
        self._is_drop = is_drop
        self._inflight = 0
        self._waiters: deque[asyncio.Future[bool]] = deque()
        # Start time and inflight-at-admission of each ``async with`` block, by task.
        self._starts: dict[asyncio.Task[Any] | None, tuple[float, int]] = {}
        self._rejected = 0
        self._queue_timeouts = 0
        self._dropped = 0
        self._completed = 0
        self._rate = CompletionRate(clock)
        algorithm.subscribe(self._on_limit)

    # -- public view ---------------------------------------------------------------------------

    @property
    def algorithm(self) -> LimitAlgorithm:
        return self._algorithm

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def inflight(self) -> int:
        return self._inflight

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def snapshot(self) -> dict[str, float]:
        return {
            "limit": self._limit,
            "inflight": self._inflight,
            "queued": len(self._waiters),
            "max_queue": self._max_queue,
            # Every admitted call is either still in flight or has completed.
            "accepted": self._completed + self._inflight,
            "rejected": self._rejected,
            "queue_timeouts": self._queue_timeouts,
            "dropped_samples": self._dropped,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, limit={self._limit}, "
            f"inflight={self._inflight}, queued={len(self._waiters)})"
        )

    # -- use ----------------------------------------------------------------------------------

    async def call(self, inner: Service[Req, Resp], request: Req) -> Resp:
        if self._inflight < self._limit:
            self._inflight += 1
        else:
            await self._wait_for_slot()
        if not self._sampling:
            try:
                return await inner(request)
            finally:
                self._completed += 1
                if self._waiters:
                    self._free_slot()
                else:
                    self._inflight -= 1
        inflight = self._inflight
        start = self._clock.now()
        try:
            response = await inner(request)
        except BaseException as error:
            try:
                if not isinstance(error, asyncio.CancelledError):
                    self._sample(start, inflight, self._is_drop(error))
            finally:
                self._release()
            raise
        try:
            self._sample(start, inflight, False)
        finally:
            self._release()
        return response

    # ``async with`` is built from plain methods returning a finished awaitable, so the admitted
    # path creates no coroutine at all; like ``asyncio.Semaphore``, ``as`` binds ``None``.

    def __aenter__(self) -> Awaitable[None]:
        if self._inflight < self._limit:
            self._inflight += 1
            if self._sampling:
                self._mark_start()
            return _DONE
        return self._enter_after_wait()

    async def _enter_after_wait(self) -> None:
        await self._wait_for_slot()
        if self._sampling:
            self._mark_start()

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Awaitable[None]:
        if not self._sampling:
            self._completed += 1
            if self._waiters:
                self._free_slot()
            else:
                self._inflight -= 1
            return _DONE
        try:
            started = self._starts.pop(asyncio.current_task(), None)
            if started is not None and exc_type is not asyncio.CancelledError:
                dropped = exc is not None and self._is_drop(exc)
                self._sample(started[0], started[1], dropped)
        finally:
            self._release()
        return _DONE

    def _mark_start(self) -> None:
        # One adaptive limiter nested in one task is sampled once, with the outer start time.
        self._starts.setdefault(asyncio.current_task(), (self._clock.now(), self._inflight))

    # -- mechanism ----------------------------------------------------------------------------

    def _sample(self, start: float, inflight: int, dropped: bool) -> None:
        if dropped:
            self._dropped += 1
        self._algorithm.on_sample(start, self._clock.now() - start, inflight, dropped)

    def _release(self) -> None:
        self._completed += 1
        if self._waiters:
            self._free_slot()
        else:
            self._inflight -= 1

    def _free_slot(self) -> None:
        """Give our slot to the oldest live waiter if the limit still allows it, else drop it."""
        waiters = self._waiters
        if self._inflight <= self._limit:
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():  # skip waiters cancelled but not yet unwound
                    waiter.set_result(True)  # inflight unchanged: the slot changes hands
                    return
        self._inflight -= 1

    def _on_limit(self, new_limit: int) -> None:
        self._limit = new_limit
        self._hooks.on_event(self.kind, self.name, "limit", float(new_limit))
        waiters = self._waiters
        while waiters and self._inflight < new_limit:
            waiter = waiters.popleft()
            if not waiter.done():
                self._inflight += 1
                waiter.set_result(True)

    def _expire(self, waiter: asyncio.Future[bool]) -> None:
        if not waiter.done():
            self._waiters.remove(waiter)
            waiter.set_result(False)

    async def _wait_for_slot(self) -> None:
        """Slow path: queue for a slot, or raise. Returns holding a slot."""
        waiters = self._waiters
        if len(waiters) >= self._max_queue:
            if self._max_queue:
                raise self._reject(_REJECTED_QUEUE_FULL, "queue_full", len(waiters) + 1)
            raise self._reject(_REJECTED_LIMIT, "concurrency_limit", 1)
        clock = self._clock
        deadline_left = current_context().deadline - clock.now()
        if deadline_left <= 0:
            self._rejected += 1
            self._hooks.on_event(self.kind, self.name, _REJECTED_DEADLINE)
            raise DeadlineExceeded("deadline passed before a concurrency slot was free")
        ends_at_deadline = deadline_left <= self._queue_timeout
        wait = deadline_left if ends_at_deadline else self._queue_timeout
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        waiters.append(waiter)
        timer = None
        if wait != math.inf:
            timer = clock.call_later(wait, functools.partial(self._expire, waiter))
        try:
            granted = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self._release_unused()  # handed a slot in the instant we were cancelled
            elif waiter in waiters:
                waiters.remove(waiter)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if granted:
            return
        if ends_at_deadline:
            self._rejected += 1
            self._hooks.on_event(self.kind, self.name, _REJECTED_DEADLINE)
            raise DeadlineExceeded("deadline passed while waiting for a concurrency slot")
        self._queue_timeouts += 1
        raise self._reject(_REJECTED_QUEUE_TIMEOUT, "queue_timeout", len(waiters) + 1)

    def _release_unused(self) -> None:
        if self._waiters:
            self._free_slot()
        else:
            self._inflight -= 1

    def _reject(self, event: str, reason: str, position: int) -> Overloaded:
        self._rejected += 1
        self._hooks.on_event(self.kind, self.name, event)
        return Overloaded(
            f"{self.name}: {reason} (limit {self._limit}, queued {len(self._waiters)})",
            retry_after=self._retry_after(position),
            reason=reason,
        )

    def _retry_after(self, position: int) -> float | None:
        """``position`` completions away, at the recent completion rate (Little's law)."""
        rate = self._rate.per_second(self._completed)
        return position / rate if rate > 0.0 else None


class Bulkhead(ConcurrencyLimiter):
    """A static bulkhead: at most ``max_concurrent`` calls in flight and ``max_queue`` waiting,
    so one slow dependency cannot take every worker with it (Envoy's max_requests and
    max_pending_requests circuit breakers; Hystrix's semaphore isolation)."""

    kind = "bulkhead"

    def __init__(
        self,
        max_concurrent: int,
        max_queue: int = 0,
        *,
        queue_timeout: float | None = None,
        clock: Clock = REAL_CLOCK,
        name: str = "bulkhead",
        hooks: Hooks = NO_HOOKS,
    ) -> None:
        super().__init__(
            FixedLimit(max_concurrent),
            max_queue=max_queue,
            queue_timeout=queue_timeout,
            clock=clock,
            name=name,
            hooks=hooks,
        )
