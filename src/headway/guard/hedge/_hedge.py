"""Hedged requests: if an attempt is slow, send another and take whichever answers first.

From "The Tail at Scale" (Dean & Barroso, CACM 2013): send a second copy after the request has
been outstanding longer than, say, the 95th-percentile latency; the extra load is a few percent
while the tail shrinks. The delay is fixed, or a percentile from :class:`RotatingPercentile`.

Guarantees: the first success wins and every other attempt is cancelled *and awaited* before the
call returns or raises, so no task outlives the call (also when the caller is cancelled); an
attempt that fails while another is still running does not end the call, which waits for the
other; when the last running attempt fails and no hedge is due, its error propagates (retrying is
retry's job); each hedge withdraws one token from the :class:`RetryBudget` and none is sent when
it is empty; no hedge is sent at or after the request's deadline. Attempts run in child tasks
that inherit the request context (deadline, priority, attributes).
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any, Final, Generic

from headway.core import (
    NO_HOOKS,
    REAL_CLOCK,
    Clock,
    Guard,
    Hooks,
    Service,
    TimerHandle,
    current_context,
)
from headway.core._service import Req, Resp
from headway.guard.retry import RetryBudget

from ._latency import RotatingPercentile

#: "The Tail at Scale" (Dean & Barroso, 2013): hedge after the 95th-percentile expected latency.
DEFAULT_PERCENTILE: Final = 0.95
#: Our choice: the hedge delay used until the estimator has enough samples, and its floor.
DEFAULT_MIN_DELAY: Final = 0.1
#: One original and one hedge, as in "The Tail at Scale"; more copies rarely pay for their load.
DEFAULT_MAX_ATTEMPTS: Final = 2


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _attempt(inner: Service[Req, Resp], request: Req) -> Resp:
    return await inner(request)


class _Race(Generic[Resp]):
    """One hedged call's attempts and its pending hedge timer."""

    def __init__(self, first: asyncio.Task[Resp]) -> None:
        self.tasks: list[asyncio.Task[Resp]] = [first]
        self.running: set[asyncio.Future[Any]] = {first}
        self.timer: asyncio.Future[None] | None = None
        self.handle: TimerHandle | None = None

    async def end(self) -> None:
        """Stop the timer; cancel every attempt still running and wait until it has ended, so
        none outlives the call."""
        if self.handle is not None:
            self.handle.cancel()
        if self.timer is not None:
            self.timer.cancel()
        if self.running:
            for pending in self.running:
                pending.cancel()
            await asyncio.wait(self.running)
        for task in self.tasks:
            # Mark every loser's outcome as seen, so asyncio does not log it as lost.
            if task.done() and not task.cancelled():
                task.exception()


class Hedge(Guard):
    """Send up to ``max_attempts - 1`` extra attempts, ``delay`` apart, while none has answered.

    ``delay`` fixes the wait; without it the wait is the ``percentile`` of recent successful
    latencies (at least ``min_delay``, and ``min_delay`` until enough samples are seen).
    """

    kind = "hedge"

    def __init__(
        self,
        delay: float | None = None,
        *,
        percentile: float | None = None,
        min_delay: float = DEFAULT_MIN_DELAY,
        period: float = 10.0,
        min_samples: int = 20,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        budget: RetryBudget | None = None,
        deposit: bool = True,
        clock: Clock = REAL_CLOCK,
        hooks: Hooks = NO_HOOKS,
        name: str = "hedge",
    ) -> None:
        if delay is not None and percentile is not None:
            raise ValueError("pass a fixed delay or a percentile, not both")
        if delay is not None and delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.delay = delay
        self.min_delay = min_delay
        self.latency: RotatingPercentile | None = None
        if delay is None:
            self.latency = RotatingPercentile(
                DEFAULT_PERCENTILE if percentile is None else percentile,
                period=period,
                min_samples=min_samples,
                clock=clock,
            )
        self.max_attempts = max_attempts
        self.budget = budget if budget is not None else RetryBudget(clock=clock)
        self.name = name
        self._deposit = deposit
        self._clock = clock
        self._hooks = hooks
        self.calls = 0
        self.hedges_sent = 0
        self.hedges_won = 0
        self.budget_exhausted = 0

    def current_delay(self) -> float:
        """How long the next call will wait before hedging."""
        if self.delay is not None:
            return self.delay
        assert self.latency is not None
        estimate = self.latency.estimate()
        if estimate is None or estimate < self.min_delay:
            return self.min_delay
        return estimate

    async def call(self, inner: Service[Req, Resp], request: Req) -> Resp:
        self.calls += 1
        if self._deposit:
            self.budget.deposit()
        start = self._clock.now()
        delay = self.current_delay()
        if self.max_attempts < 2 or start + delay >= current_context().deadline:
            # No hedge could be sent in time: call inline, without a task.
            result = await inner(request)
            if self.latency is not None:
                self.latency.record(self._clock.now() - start)
            return result
        return await self._hedged(inner, request, start, delay)

    async def _hedged(
        self, inner: Service[Req, Resp], request: Req, start: float, delay: float
    ) -> Resp:
        race = _Race(asyncio.get_running_loop().create_task(_attempt(inner, request)))
        failure: BaseException | None = None
        try:
            result = await self._race(race, inner, request, start, delay)
        except BaseException as error:  # the caller's cancellation too
            failure = error
        # The stragglers are cancelled and awaited after the ``try``, not in a ``finally``:
        # an await there is what mypyc gets wrong (tests/unit/test_native.py).
        await race.end()
        if failure is not None:
            raise failure
        return result

    async def _race(
        self, race: _Race[Resp], inner: Service[Req, Resp], request: Req, start: float, delay: float
    ) -> Resp:
        loop = asyncio.get_running_loop()
        clock = self._clock
        deadline = current_context().deadline
        tasks = race.tasks
        running = race.running
        last_error: BaseException | None = None
        limit = self.max_attempts
        while True:
            if race.timer is None and len(tasks) < limit:
                fire_at = start + delay * len(tasks)
                if fire_at < deadline:
                    timer = race.timer = loop.create_future()
                    race.handle = clock.call_later(fire_at - clock.now(), partial(_wake, timer))
            waiting = set(running)
            if race.timer is not None:
                waiting.add(race.timer)
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for index, task in enumerate(tasks):
                if task not in done:
                    continue
                running.discard(task)
                if task.cancelled():
                    last_error = asyncio.CancelledError()
                    continue
                error = task.exception()
                if error is None:
                    return self._won(index, task.result(), start)
                last_error = error
            if not running:
                assert last_error is not None
                raise last_error
            if race.timer is not None and race.timer.done():
                race.timer = None
                race.handle = None
                if not self._send(loop, tasks, running, inner, request, deadline):
                    # A refusal ends hedging for this call: later timers would fare no better.
                    limit = len(tasks)

    def _send(
        self,
        loop: asyncio.AbstractEventLoop,
        tasks: list[asyncio.Task[Resp]],
        running: set[asyncio.Future[Any]],
        inner: Service[Req, Resp],
        request: Req,
        deadline: float,
    ) -> bool:
        """Send one hedge if time and budget allow; False ends hedging for this call."""
        if self._clock.now() >= deadline:
            return False
        if not self.budget.try_withdraw():
            self.budget_exhausted += 1
            self._hooks.on_event(self.kind, self.name, "budget_exhausted")
            return False
        task = loop.create_task(_attempt(inner, request))
        tasks.append(task)
        running.add(task)
        self.hedges_sent += 1
        self._hooks.on_event(self.kind, self.name, "hedge.sent", len(tasks) - 1)
        return True

    def _won(self, index: int, result: Resp, start: float) -> Resp:
        if index > 0:
            self.hedges_won += 1
            self._hooks.on_event(self.kind, self.name, "hedge.won", index)
        if self.latency is not None:
            self.latency.record(self._clock.now() - start)
        return result

    def snapshot(self) -> dict[str, float]:
        return {
            "calls": self.calls,
            "hedges_sent": self.hedges_sent,
            "hedges_won": self.hedges_won,
            "budget_exhausted": self.budget_exhausted,
            "delay": self.current_delay(),
        }

    def __repr__(self) -> str:
        return f"Hedge(delay={self.delay}, max_attempts={self.max_attempts}, name={self.name!r})"
