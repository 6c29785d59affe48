"""Observability switches: Prometheus metrics, the structured access log, tracing.

Metrics and the access log are off by default: together they cost a worker a few percent of
its CPU per request (README, Numbers: `bench/observe_cost.py` and `bench/instructions.py`).
Off, their whole cost leaves the request path. The embedded demo turns both on.
"""

from __future__ import annotations

from pydantic import Field

from ._base import Section
from ._tracing import TracingConfig

__all__ = ["ObserveConfig"]


class ObserveConfig(Section):
    """What the gateway records about the requests it serves."""

    metrics: bool = False
    """Count and time every request, upstream attempt and guard decision, exposed as
    Prometheus text on the admin port's /metrics. Off: nothing is recorded on the request path
    and /metrics answers 404."""
    access_log: bool = False
    """One JSON line per request on the 'headway.access' logger (request id, tenant, model,
    endpoint, status, latency, tokens, decisions; never keys or prompts). Off: nothing is
    formatted or written."""
    record_delay: float = Field(default=0.01, ge=0.0, le=1.0)
    """Seconds a finished request's outcome waits for others before the batch is recorded
    (metrics, access log, SLOs, spans); 0: at the end of its event-loop turn. Readers of the
    admin port record what is waiting first, so only the once-a-second timeline can be this
    much behind; in exchange a batch shares recording's fixed cost (~6k instructions) among a
    few hundred requests at saturation instead of a loop turn's handful."""
    tracing: TracingConfig = TracingConfig()
    """OpenTelemetry spans per request, exported over OTLP/HTTP (off by default)."""
