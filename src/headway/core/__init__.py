"""Headway's core contracts: services and layers, the request context and its deadline, the
clock, the error hierarchy and the hook interface. Everything else builds on these."""

from ._clock import REAL_CLOCK, Clock, ManualClock, RealClock, TimerHandle
from ._context import (
    Context,
    Priority,
    annotate,
    current_context,
    request_context,
    reset_context,
    set_context,
)
from ._deadline import DeadlineScope, deadline_after
from ._errors import (
    CircuitOpen,
    DeadlineExceeded,
    HeadwayError,
    Overloaded,
    RateLimited,
    Rejected,
    UpstreamError,
    UpstreamTimeout,
    chained,
    retry_after_of,
)
from ._hooks import NO_HOOKS, FanoutHooks, Hooks, NoHooks, Observable, RecordingHooks
from ._service import Guard, Layer, Service, Stack

__all__ = [
    "NO_HOOKS",
    "REAL_CLOCK",
    "CircuitOpen",
    "Clock",
    "Context",
    "DeadlineExceeded",
    "DeadlineScope",
    "FanoutHooks",
    "Guard",
    "HeadwayError",
    "Hooks",
    "Layer",
    "ManualClock",
    "NoHooks",
    "Observable",
    "Overloaded",
    "Priority",
    "RateLimited",
    "RealClock",
    "RecordingHooks",
    "Rejected",
    "Service",
    "Stack",
    "TimerHandle",
    "UpstreamError",
    "UpstreamTimeout",
    "annotate",
    "chained",
    "current_context",
    "deadline_after",
    "request_context",
    "reset_context",
    "retry_after_of",
    "set_context",
]
