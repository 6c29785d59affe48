"""Time, behind one small interface, so every time-dependent guard is testable exactly.

Guarantees: ``now()`` is monotonic seconds; ``sleep`` and ``call_later`` are measured on the same
clock, so a deadline computed from ``now()`` is honoured by timers from the same clock. The
:class:`ManualClock` only moves when a test moves it, which makes breaker windows, limiter refills
and backoff schedules exact and instant to test.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from time import monotonic as _time_monotonic
from typing import Final, Protocol

from mypy_extensions import mypyc_attr

# Final: compiled, a static, where an imported name is a module-dict lookup at every read
# (a request reads the clock about ten times).
_monotonic: Final = _time_monotonic


class TimerHandle(Protocol):
    """A scheduled callback that can still be cancelled."""

    def cancel(self) -> None: ...


# A base class, not a Protocol: compiled code (headway._native) calls a base class's methods
# through a table, a Protocol's by name lookup (a request reads the clock about ten times).
@mypyc_attr(allow_interpreted_subclasses=True)
class Clock:
    """Monotonic time, sleeping and timers, all on one time base. Subclass it for another
    clock: :class:`RealClock` and :class:`ManualClock` are the two here."""

    def now(self) -> float:
        """Seconds on a monotonic scale; only differences are meaningful."""
        raise NotImplementedError

    async def sleep(self, seconds: float) -> None:
        """Suspend the current task for ``seconds`` of this clock's time."""
        raise NotImplementedError

    def call_later(self, seconds: float, callback: Callable[[], object]) -> TimerHandle:
        """Run ``callback`` once, ``seconds`` from now, on the running event loop."""
        raise NotImplementedError


class RealClock(Clock):
    """The process's monotonic clock; timers go through the running event loop."""

    def now(self) -> float:
        return _monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def call_later(self, seconds: float, callback: Callable[[], object]) -> TimerHandle:
        # Relative scheduling keeps us independent of the loop's own time base (uvloop's
        # loop.time() is not time.monotonic()).
        return asyncio.get_running_loop().call_later(max(0.0, seconds), callback)


class _ManualTimer:
    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock(Clock):
    """A clock that only moves when told to; for exact, instant tests.

    ``advance`` fires every due timer in time order, and between timers gives the event loop a
    few turns so that woken tasks run (and may schedule further timers) before time moves on.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._seq = itertools.count()
        self._timers: list[tuple[float, int, _ManualTimer]] = []

    def now(self) -> float:
        return self._now

    def call_later(self, seconds: float, callback: Callable[[], object]) -> TimerHandle:
        timer = _ManualTimer(self._now + max(0.0, seconds), callback)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        timer = self.call_later(seconds, wake)
        try:
            await future
        finally:
            timer.cancel()

    @property
    def pending_timers(self) -> int:
        """Timers still scheduled (not fired, not cancelled)."""
        return sum(1 for _, _, t in self._timers if not t.cancelled)

    def _fire_due(self, until: float) -> bool:
        """Fire the earliest due timer at or before ``until``; False when none is due."""
        while self._timers and self._timers[0][0] <= until:
            when, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._now = max(self._now, when)
            timer.callback()
            return True
        return False

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, firing timers in order and letting tasks run."""
        target = self._now + seconds
        await _settle()
        while self._fire_due(target):
            await _settle()
        self._now = max(self._now, target)
        await _settle()

    def step(self, seconds: float) -> None:
        """Move time forward synchronously, firing due timer callbacks but running no tasks.

        For state machines that only read ``now()`` (breakers, limiters) in synchronous tests.
        """
        target = self._now + seconds
        while self._fire_due(target):
            pass
        self._now = max(self._now, target)


async def _settle(turns: int = 8) -> None:
    for _ in range(turns):
        await asyncio.sleep(0)


REAL_CLOCK: Final[Clock] = RealClock()
"""The shared real clock: stateless, so sharing it is not a global-state hazard."""
