"""One typed error hierarchy for every guard and the gateway.

Every refusal says *why* (``reason``), whether calling again could help (``retryable``) and, where
the guard knows, *when* (``retry_after`` seconds). The gateway maps these once to HTTP status codes
and OpenAI-format error bodies; nothing else needs to know about HTTP.
"""

from __future__ import annotations

from typing import TypeVar


class HeadwayError(Exception):
    """Base of every error Headway raises on purpose."""

    #: Whether the same call, tried again (elsewhere or later), could succeed.
    retryable: bool = False
    #: A short machine-readable cause, stable enough for metrics labels and access logs.
    reason: str = "error"

    def __init__(self, message: str = "", *, reason: str | None = None) -> None:
        super().__init__(message or self.__class__.__name__)
        if reason is not None:
            self.reason = reason


class Rejected(HeadwayError):
    """The call was refused before any work was done, so it is always safe to retry later."""

    reason = "rejected"

    def __init__(
        self,
        message: str = "",
        *,
        retry_after: float | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, reason=reason)
        #: Seconds after which the caller may try again; ``None`` when unknown.
        self.retry_after = retry_after


class RateLimited(Rejected):
    """A rate or quota limit refused the call (HTTP 429)."""

    reason = "rate_limited"


class Overloaded(Rejected):
    """Capacity (concurrency, queue, admission) refused the call (HTTP 503)."""

    reason = "overloaded"


class CircuitOpen(Rejected):
    """A circuit breaker refused the call because its target is failing (HTTP 503)."""

    reason = "circuit_open"
    # Another endpoint or a later attempt may well succeed.
    retryable = True


class DeadlineExceeded(HeadwayError, TimeoutError):
    """The request's deadline passed (HTTP 504); never retried, the time is gone."""

    reason = "deadline_exceeded"


class UpstreamError(HeadwayError):
    """The called service failed; ``status`` is its HTTP status when there was one."""

    reason = "upstream_error"

    def __init__(
        self,
        message: str = "",
        *,
        status: int | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, reason=reason)
        self.status = status
        self.retry_after = retry_after
        if retryable is None:
            # Connection failures and 5xx/429 are worth another attempt; other 4xx are the
            # caller's fault and would fail again.
            retryable = status is None or status >= 500 or status == 429
        self.retryable = retryable


class UpstreamTimeout(UpstreamError):
    """An upstream attempt timed out (connect, first token, stall between chunks)."""

    reason = "upstream_timeout"

    def __init__(self, message: str = "", *, reason: str | None = None) -> None:
        super().__init__(message, status=None, retryable=True, reason=reason)


def retry_after_of(error: BaseException) -> float | None:
    """The ``retry_after`` hint an error carries, if any."""
    value = getattr(error, "retry_after", None)
    return value if isinstance(value, int | float) else None


E = TypeVar("E", bound=BaseException)


def chained(error: E, cause: BaseException | None) -> E:
    """``raise chained(error, cause)`` does what ``raise error from cause`` does (``cause`` None:
    the context is not shown). Modules compiled with mypyc use it: mypyc 2.4 drops ``from``
    (``headway._native``; tests/unit/test_native.py)."""
    error.__cause__ = cause  # also sets __suppress_context__, as ``from`` does
    return error
