"""Circuit breaker: stop calling a failing target, probe it after a while, resume on recovery.

Usable as a layer, a decorator, ``async with breaker:``, or through the permission API
(``acquire``/``on_success``/``on_failure``/``on_error``/``release``) for callers that measure
their own calls, such as streamed responses.
"""

from ._breaker import CircuitBreaker, StateListener
from ._config import BreakerConfig, default_is_failure, default_is_ignored
from ._state import BreakerState
from ._window import CountWindow, TimeWindow, Window, WindowType, make_window

__all__ = [
    "BreakerConfig",
    "BreakerState",
    "CircuitBreaker",
    "CountWindow",
    "StateListener",
    "TimeWindow",
    "Window",
    "WindowType",
    "default_is_failure",
    "default_is_ignored",
    "make_window",
]
