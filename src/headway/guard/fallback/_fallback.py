"""Fallback: when the primary service fails in a chosen way, serve the request elsewhere.

Typical use in the gateway: on a rate limit, an open breaker or an upstream failure, send the
request to a smaller model or another provider (``transform`` may rewrite the request first).

Guarantees: only errors chosen by ``on`` trigger the alternative; by default that is
:class:`Rejected` (refused before any work, so always safe to send elsewhere) and
:class:`UpstreamError`; never :class:`DeadlineExceeded` (no time is left to spend) and never a
cancellation; no fallback is attempted once the request's deadline has passed. Each fallback is
recorded in the request context's ``attributes["fallback"]`` (a list of reasons) for the access
log. If the alternative fails too, its error is raised, chained from the original one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from headway.core import (
    NO_HOOKS,
    REAL_CLOCK,
    Clock,
    DeadlineExceeded,
    Guard,
    Hooks,
    Rejected,
    Service,
    UpstreamError,
    annotate,
    chained,
    current_context,
)
from headway.core._service import Req, Resp

#: Refused before any work (always safe elsewhere) or failed upstream; not DeadlineExceeded.
DEFAULT_ON: Final[tuple[type[BaseException], ...]] = (Rejected, UpstreamError)

Trigger = tuple[type[BaseException], ...] | Callable[[BaseException], bool]


class Fallback(Guard):
    """Call ``alternative`` with the same (or ``transform``-ed) request when ``on`` matches."""

    kind = "fallback"

    def __init__(
        self,
        alternative: Service[Any, Any],
        *,
        on: Trigger = DEFAULT_ON,
        transform: Callable[[Any, BaseException], Any] | None = None,
        clock: Clock = REAL_CLOCK,
        hooks: Hooks = NO_HOOKS,
        name: str = "fallback",
    ) -> None:
        self._alternative = alternative
        if isinstance(on, tuple):
            self._on_types: tuple[type[BaseException], ...] = on
            self._on_predicate: Callable[[BaseException], bool] | None = None
        else:
            self._on_types = ()
            self._on_predicate = on
        self._transform = transform
        self._clock = clock
        self._hooks = hooks
        self.name = name
        self.calls = 0
        self.fallbacks = 0
        self.fallback_failures = 0

    def should_fall_back(self, error: BaseException) -> bool:
        """Whether ``error`` from the primary service sends the request to the alternative."""
        if isinstance(error, DeadlineExceeded):
            return False
        if self._on_predicate is not None:
            return self._on_predicate(error)
        return isinstance(error, self._on_types)

    async def call(self, inner: Service[Req, Resp], request: Req) -> Resp:
        self.calls += 1
        try:
            return await inner(request)
        except Exception as error:
            if not self.should_fall_back(error):
                raise
            primary = error
        return await self._fall_back(request, primary)

    async def _fall_back(self, request: Req, error: Exception) -> Resp:
        ctx = current_context()
        if ctx.deadline <= self._clock.now():
            raise error
        reason = getattr(error, "reason", None)
        if not isinstance(reason, str):
            reason = type(error).__name__
        self.fallbacks += 1
        self._hooks.on_event(self.kind, self.name, "fallback." + reason)
        annotate("fallback", reason)
        if self._transform is not None:
            request = self._transform(request, error)
        try:
            result: Resp = await self._alternative(request)
        except Exception as alt_error:
            self.fallback_failures += 1
            self._hooks.on_event(self.kind, self.name, "fallback_failed")
            raise chained(alt_error, error)  # noqa: B904 - is ``from error`` (mypyc drops it)
        return result

    def snapshot(self) -> dict[str, float]:
        return {
            "calls": self.calls,
            "fallbacks": self.fallbacks,
            "fallback_failures": self.fallback_failures,
        }

    def __repr__(self) -> str:
        return f"Fallback({self._alternative!r}, name={self.name!r})"
