"""A cancel scope bound to an absolute deadline: the mechanism behind every timeout.

Guarantees: the body runs with the request context's deadline lowered to the scope's; when the
deadline passes, the task is cancelled and :class:`DeadlineExceeded` is raised *in place of* the
cancellation; a cancellation that came from elsewhere (the caller gave up) propagates untouched;
the timer is always removed, so nothing leaks. Works on any :class:`Clock`, so a
:class:`ManualClock` drives timeouts exactly in tests.
"""

from __future__ import annotations

import asyncio
import math
from types import TracebackType

from ._clock import REAL_CLOCK, Clock, TimerHandle
from ._context import _EMPTY, _current
from ._errors import DeadlineExceeded


class DeadlineScope:
    """``async with DeadlineScope(deadline):`` cancels the body at ``deadline``.

    The effective deadline is the earlier of ``deadline`` and the current request's deadline.
    A scope whose deadline has already passed raises before the body starts.
    """

    __slots__ = (
        "_cancelling",
        "_clock",
        "_deadline",
        "_expired",
        "_message",
        "_task",
        "_timer",
        "_token",
    )

    def __init__(
        self, deadline: float, *, clock: Clock = REAL_CLOCK, message: str = "deadline exceeded"
    ) -> None:
        self._deadline = deadline
        self._clock = clock
        self._message = message
        self._timer: TimerHandle | None = None
        self._task: asyncio.Task[object] | None = None
        self._expired = False
        self._token: object = None
        self._cancelling = 0

    @property
    def deadline(self) -> float:
        return self._deadline

    @property
    def expired(self) -> bool:
        """True when this scope's own timer cancelled the body."""
        return self._expired

    def _fire(self) -> None:
        self._expired = True
        if self._task is not None:
            self._task.cancel()

    async def __aenter__(self) -> DeadlineScope:
        outer = _current.get(_EMPTY)
        deadline = min(self._deadline, outer.deadline)
        self._deadline = deadline
        remaining = deadline - self._clock.now()
        if remaining <= 0:
            self._expired = True
            raise DeadlineExceeded(self._message)
        if deadline != outer.deadline:
            ctx = outer.evolve(deadline=deadline)
            self._token = _current.set(ctx)
        if remaining != math.inf:
            self._task = task = asyncio.current_task()
            if task is not None:
                self._cancelling = task.cancelling()
            self._timer = self._clock.call_later(remaining, self._fire)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._token is not None:
            _current.reset(self._token)  # type: ignore[arg-type]
            self._token = None
        if self._expired and self._task is not None:
            task = self._task
            self._task = None
            # Our own cancel: swallow it (uncancel keeps outer cancel scopes exact) and raise
            # the typed error instead. A body that finished despite the cancel keeps its result.
            if task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                raise DeadlineExceeded(self._message) from exc
        self._task = None
        return False


def deadline_after(seconds: float, *, clock: Clock = REAL_CLOCK) -> DeadlineScope:
    """A scope ending ``seconds`` from now (or earlier, if the request's deadline is earlier)."""
    return DeadlineScope(clock.now() + seconds, clock=clock)
