"""A timeout guard: bounds one call (or one ``async with`` block) by ``seconds``.

Guarantees: the effective deadline is the earlier of ``now + seconds`` and the request's own
deadline, so a timeout never grants more time than the caller has; nested timeouts take the
earliest; on expiry the body is cancelled and :class:`DeadlineExceeded` is raised in its place,
while a cancellation from elsewhere propagates untouched; no timer outlives the block. All of
this is core's :class:`DeadlineScope`; this module adds counting and the reusable-guard shape.
"""

from __future__ import annotations

import contextvars
from types import TracebackType

from headway.core import (
    NO_HOOKS,
    REAL_CLOCK,
    Clock,
    DeadlineExceeded,
    DeadlineScope,
    Guard,
    Hooks,
    Service,
)
from headway.core._service import Req, Resp


class _Scope(DeadlineScope):
    """A deadline scope that remembers how to undo its entry in ``_active``."""

    token: contextvars.Token[_Scope | None]


# The innermost ``async with timeout:`` scope of the running task. One guard instance may be
# entered by many tasks at once (and nested in one), so the per-entry scope cannot live on it.
_active: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar(
    "headway_timeout_scope", default=None
)


class Timeout(Guard):
    """Cancel the guarded call after ``seconds`` (or at the request deadline, if earlier).

    Use as ``await timeout.call(service, request)``, ``timeout.wrap(service)``, ``@timeout``,
    or around any block: ``async with timeout: ...``.
    """

    kind = "timeout"

    def __init__(
        self,
        seconds: float,
        *,
        clock: Clock = REAL_CLOCK,
        hooks: Hooks = NO_HOOKS,
        name: str = "timeout",
    ) -> None:
        if not seconds > 0:
            raise ValueError(f"seconds must be > 0, got {seconds}")
        self.seconds = seconds
        self.name = name
        self._clock = clock
        self._hooks = hooks
        self.calls = 0
        self.timeouts = 0

    async def call(self, inner: Service[Req, Resp], request: Req) -> Resp:
        self.calls += 1
        clock = self._clock
        scope = DeadlineScope(clock.now() + self.seconds, clock=clock)
        try:
            async with scope:  # aexit never waits
                result = await inner(request)
        except DeadlineExceeded:
            if scope.expired:
                self._expired()
            raise
        return result

    def _expired(self) -> None:
        self.timeouts += 1
        self._hooks.on_event(self.kind, self.name, "timeout")

    async def __aenter__(self) -> DeadlineScope:
        self.calls += 1
        clock = self._clock
        scope = _Scope(clock.now() + self.seconds, clock=clock)
        try:
            await scope.__aenter__()
        except DeadlineExceeded:
            self._expired()
            raise
        scope.token = _active.set(scope)
        return scope

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        scope = _active.get()
        if scope is None:
            raise RuntimeError("Timeout.__aexit__ without a matching __aenter__")
        _active.reset(scope.token)
        try:
            await scope.__aexit__(exc_type, exc, tb)
        except DeadlineExceeded:
            if scope.expired:
                self._expired()
            raise

    def snapshot(self) -> dict[str, float]:
        return {"calls": self.calls, "timeouts": self.timeouts, "seconds": self.seconds}

    def __repr__(self) -> str:
        return f"Timeout({self.seconds}, name={self.name!r})"
