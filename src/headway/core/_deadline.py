"""A cancel scope bound to an absolute deadline: the mechanism behind every timeout.

Guarantees: the body runs with the request context's deadline lowered to the scope's; when the
deadline passes, the task is cancelled and :class:`DeadlineExceeded` is raised *in place of* the
cancellation; a cancellation that came from elsewhere (the caller gave up) propagates untouched;
the timer registration is always removed, so nothing leaks. Works on any :class:`Clock`, so a
:class:`ManualClock` drives timeouts exactly in tests.

Cost: scopes share one real timer per loop and clock (see ``_timers``), so entering and leaving
a scope is a heap push and a flag, not a timer scheduled and cancelled on the event loop.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from types import TracebackType

from ._clock import REAL_CLOCK, Clock
from ._context import _EMPTY, Context, _current
from ._errors import DeadlineExceeded, chained
from ._ready import DONE
from ._timers import TimerEntry, TimerQueue, running_task, timer_queue


class DeadlineScope:
    """``async with DeadlineScope(deadline):`` cancels the body at ``deadline``.

    The effective deadline is the earlier of ``deadline`` and the current request's deadline.
    A scope whose deadline has already passed raises before the body starts.
    """

    def __init__(
        self, deadline: float, *, clock: Clock = REAL_CLOCK, message: str = "deadline exceeded"
    ) -> None:
        self._deadline = deadline
        self._clock = clock
        self._message = message
        self._entry: TimerEntry | None = None
        self._queue: TimerQueue | None = None
        self._task: asyncio.Task[object] | None = None
        self._expired = False
        self._token: object = None
        self._cancelling = 0

    @property
    def deadline(self) -> float:
        return self._deadline

    @property
    def expired(self) -> bool:
        """True when this scope's own deadline cancelled the body."""
        return self._expired

    def _fire(self) -> None:
        self._expired = True
        if self._task is not None:
            self._task.cancel()

    async def __aenter__(self) -> DeadlineScope:
        outer = _current.get(_EMPTY)
        deadline = self._deadline
        if outer.deadline < deadline:
            deadline = self._deadline = outer.deadline
        remaining = deadline - self._clock.now()
        if remaining <= 0:
            self._expired = True
            raise DeadlineExceeded(self._message)
        if deadline == math.inf:
            return self
        if deadline != outer.deadline:
            self._token = _current.set(
                Context(deadline, outer.priority, outer.tenant, outer.request_id, outer.attributes)
            )
        loop, task = running_task()
        if task is not None:
            self._task = task
            self._cancelling = task.cancelling()
            queue = self._queue = timer_queue(self._clock, loop)
            self._entry = queue.add(deadline, self._fire)
        return self

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Awaitable[None]:
        # A plain method returning a finished awaitable: leaving a scope never waits.
        entry = self._entry
        if entry is not None:
            self._queue.remove(entry)  # type: ignore[union-attr]
            self._entry = None
        if self._token is not None:
            _current.reset(self._token)  # type: ignore[arg-type]
            self._token = None
        task = self._task
        if task is not None:
            self._task = None
            # Our own cancel: swallow it (uncancel keeps outer cancel scopes exact) and raise
            # the typed error instead. A body that finished despite the cancel keeps its result.
            if (
                self._expired
                and task.uncancel() <= self._cancelling
                and exc_type is asyncio.CancelledError
            ):
                raise chained(DeadlineExceeded(self._message), exc)
        return DONE


def deadline_after(seconds: float, *, clock: Clock = REAL_CLOCK) -> DeadlineScope:
    """A scope ending ``seconds`` from now (or earlier, if the request's deadline is earlier)."""
    return DeadlineScope(clock.now() + seconds, clock=clock)
