"""What a circuit breaker decides on: thresholds, windows, timings and which errors count.

Defaults are chosen for an LLM gateway and each names its source. The starting point is
Resilience4j's ``CircuitBreakerConfig``; where its defaults are too slow for a small pool of LLM
endpoints at low request rates (it needs 100 calls before it can open), we follow Hystrix and the
"bad endpoint" targets of the Headway reference (``overload-and-resilience.md`` section 4.2).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass

from headway.core import Rejected, UpstreamError

from ._window import WindowType


def default_is_failure(error: BaseException) -> bool:
    """Default failure predicate: everything except a client's own mistake.

    An upstream answering 4xx (other than 429) to a bad request is working correctly, so such a
    call counts as a success. Deadlines, timeouts, 5xx, 429 and connection errors count.
    """
    if isinstance(error, UpstreamError):
        status = error.status
        if status is not None and 400 <= status < 500 and status != 429 and not error.retryable:
            return False
    return True


def default_is_ignored(error: BaseException) -> bool:
    """Default ignore predicate: outcomes that say nothing about the protected target.

    A cancelled call, a rejection by another guard below the breaker (the call never reached the
    target) and process-level exits (``KeyboardInterrupt``, ``SystemExit``) are recorded neither
    as success nor as failure; a half-open probe permit they held is given back.
    """
    return isinstance(error, asyncio.CancelledError | Rejected) or not isinstance(error, Exception)


@dataclass(frozen=True)
class BreakerConfig:
    """Settings of one :class:`CircuitBreaker`; rates are percentages (0-100]."""

    # Resilience4j failureRateThreshold 50%; Hystrix errorThresholdPercentage 50%.
    failure_rate_threshold: float = 50.0
    # Resilience4j slowCallRateThreshold 100% (open only when every call in the window is slow).
    slow_call_rate_threshold: float = 100.0
    # Resilience4j slowCallDurationThreshold 60 s; long generations are normal for LLMs, a
    # minute-long call is not.
    slow_call_duration: float = 60.0
    # Resilience4j slidingWindowType COUNT_BASED.
    window_type: WindowType = WindowType.COUNT_BASED
    # Resilience4j slidingWindowSize 100 (calls; seconds for TIME_BASED, where Hystrix uses 10).
    window_size: int = 100
    # Hystrix circuitBreakerRequestVolumeThreshold 20 and reference section 4.2 ("50% errors over
    # >= 20 requests"); Resilience4j's 100 is too slow for a 3-endpoint pool at low RPS.
    minimum_number_of_calls: int = 20
    # Reference section 4.2 / Envoy outlier detection base_ejection_time 30 s (Resilience4j
    # waitDurationInOpenState 60 s, Hystrix sleepWindow 5 s).
    wait_duration_in_open: float = 30.0
    # Reference section 4.2 / Envoy: the ejection time doubles on each repeated ejection...
    open_backoff_multiplier: float = 2.0
    # ...up to Envoy's max_ejection_time 300 s.
    max_wait_duration_in_open: float = 300.0
    # Resilience4j permittedNumberOfCallsInHalfOpenState 10.
    permitted_calls_in_half_open: int = 10
    #: Whether a raised error counts as a failure (``False``: it counts as a success).
    is_failure: Callable[[BaseException], bool] = default_is_failure
    #: Whether a raised error is recorded at all (``True``: neither success nor failure).
    is_ignored: Callable[[BaseException], bool] = default_is_ignored

    def __post_init__(self) -> None:
        for field in ("failure_rate_threshold", "slow_call_rate_threshold"):
            value = getattr(self, field)
            if not 0.0 < value <= 100.0:
                raise ValueError(f"{field} must be in (0, 100], got {value!r}")
        if not self.slow_call_duration > 0.0:
            raise ValueError("slow_call_duration must be positive")
        if self.window_size < 1:
            raise ValueError("window_size must be at least 1")
        if self.minimum_number_of_calls < 1:
            raise ValueError("minimum_number_of_calls must be at least 1")
        # A zero open time would let a half-open probe start in the instant the breaker opened.
        if not (0.0 < self.wait_duration_in_open < math.inf):
            raise ValueError("wait_duration_in_open must be positive and finite")
        if self.open_backoff_multiplier < 1.0:
            raise ValueError("open_backoff_multiplier must be at least 1")
        if self.max_wait_duration_in_open < self.wait_duration_in_open:
            raise ValueError("max_wait_duration_in_open must be >= wait_duration_in_open")
        if self.permitted_calls_in_half_open < 1:
            raise ValueError("permitted_calls_in_half_open must be at least 1")
