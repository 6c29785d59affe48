"""What may be retried and how often: the policy half of retry, kept apart from the mechanism.

Guarantees: :class:`DeadlineExceeded` is never retryable (the time is gone); cancellation is
never seen (only ``Exception`` reaches the policy); Headway errors decide for themselves through
``.retryable``; other errors are retryable only if they are of the configured transport types.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from headway.core import DeadlineExceeded, HeadwayError

#: SRE book ch. 21 ("Handling Overload"): at most 3 attempts per request; AWS SDK standard too.
DEFAULT_MAX_ATTEMPTS: Final = 3
#: Connection resets, refused connects, DNS failures, socket timeouts: all OSError subclasses.
DEFAULT_RETRY_ON: Final[tuple[type[BaseException], ...]] = (OSError,)


class RetryPolicy:
    """Which errors to retry and the attempt limit (the first attempt counts)."""

    def __init__(
        self,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        *,
        retry_on: tuple[type[BaseException], ...] = DEFAULT_RETRY_ON,
        predicate: Callable[[BaseException], bool] | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        self.max_attempts = max_attempts
        self.retry_on = retry_on
        self._predicate = predicate

    def is_retryable(self, error: BaseException) -> bool:
        """Whether trying the same request again could succeed."""
        if isinstance(error, DeadlineExceeded):
            return False
        if self._predicate is not None:
            return self._predicate(error)
        if isinstance(error, HeadwayError):
            return error.retryable
        return isinstance(error, self.retry_on)

    def __repr__(self) -> str:
        return f"RetryPolicy(max_attempts={self.max_attempts})"
