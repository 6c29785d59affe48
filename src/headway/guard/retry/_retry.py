"""The retry mechanism: call again on retryable errors, within the deadline and the budget.

Guarantees: a call is retried only if the policy says the error is retryable, at most
``max_attempts`` attempts in all; each wait is the backoff's delay, raised to the error's
``retry_after`` hint; a hint longer than ``max_retry_after`` is not waited out in-line (the error,
which carries the hint, goes back to the caller, who may retry later: holding a request for a
breaker's 30 s open period helps nobody); a wait that would end at or after the request's
deadline is not taken (the last error is raised instead), so retries never outlive the request;
every retry withdraws one
token from the :class:`RetryBudget`, and with the budget empty the last error is raised
unchanged. The success path adds one budget deposit and no allocation.
"""

from __future__ import annotations

from typing import Final

from headway.core import (
    NO_HOOKS,
    REAL_CLOCK,
    Clock,
    Guard,
    Hooks,
    Service,
    current_context,
    retry_after_of,
)
from headway.core._service import Req, Resp

from ._backoff import Backoff, ExponentialBackoff
from ._budget import RetryBudget
from ._policy import RetryPolicy

#: The longest ``Retry-After`` hint a retry waits out before trying again (our choice: an in-line
#: retry should stay within interactive latency; a longer pause is the caller's call, and HTTP
#: clients such as the OpenAI SDKs honour the Retry-After they are handed).
DEFAULT_MAX_RETRY_AFTER: Final = 2.0


class Retry(Guard):
    """Retry retryable failures with full-jitter backoff, bounded by deadline and budget.

    ``budget`` may be shared with other :class:`Retry` or ``Hedge`` guards; when two of them sit
    on the same request path and share a budget, pass ``deposit=False`` to one so each request
    is credited once.
    """

    kind = "retry"

    def __init__(
        self,
        *,
        max_attempts: int | None = None,
        policy: RetryPolicy | None = None,
        backoff: Backoff | None = None,
        budget: RetryBudget | None = None,
        deposit: bool = True,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        clock: Clock = REAL_CLOCK,
        hooks: Hooks = NO_HOOKS,
        name: str = "retry",
    ) -> None:
        if max_retry_after < 0:
            raise ValueError("max_retry_after must be >= 0")
        if policy is None:
            policy = RetryPolicy() if max_attempts is None else RetryPolicy(max_attempts)
        elif max_attempts is not None:
            raise ValueError("pass max_attempts or policy, not both")
        self.policy = policy
        self.backoff: Backoff = backoff if backoff is not None else ExponentialBackoff()
        self.budget = budget if budget is not None else RetryBudget(clock=clock)
        self.name = name
        self._deposit = deposit
        self._max_retry_after = max_retry_after
        self._clock = clock
        self._hooks = hooks
        self.calls = 0
        self.retries = 0
        self.budget_exhausted = 0
        self.gave_up = 0

    async def call(self, inner: Service[Req, Resp], request: Req) -> Resp:
        self.calls += 1
        if self._deposit:
            self.budget.deposit()
        try:
            return await inner(request)
        except Exception as error:
            first = error
        # Outside the handler, so later errors do not chain onto the first one.
        return await self._retry(inner, request, first)

    async def _retry(self, inner: Service[Req, Resp], request: Req, error: Exception) -> Resp:
        policy = self.policy
        clock = self._clock
        hooks = self._hooks
        attempt = 1
        while True:
            if not policy.is_retryable(error):
                raise error
            if attempt >= policy.max_attempts:
                self.gave_up += 1
                raise error
            delay = self.backoff.delay(attempt - 1)
            hint = retry_after_of(error)
            if hint is not None and hint > delay:
                if hint > self._max_retry_after:
                    self.gave_up += 1
                    raise error
                delay = hint
            if clock.now() + delay >= current_context().deadline:
                self.gave_up += 1
                raise error
            if not self.budget.try_withdraw():
                self.budget_exhausted += 1
                hooks.on_event(self.kind, self.name, "budget_exhausted")
                raise error
            self.retries += 1
            hooks.on_event(self.kind, self.name, "retry", attempt)
            await clock.sleep(delay)
            attempt += 1
            try:
                return await inner(request)
            except Exception as exc:
                error = exc

    def snapshot(self) -> dict[str, float]:
        return {
            "calls": self.calls,
            "retries": self.retries,
            "budget_exhausted": self.budget_exhausted,
            "gave_up": self.gave_up,
        }

    def __repr__(self) -> str:
        return f"Retry({self.policy!r}, {self.backoff!r}, {self.budget!r}, name={self.name!r})"
