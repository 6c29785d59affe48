"""Observability switches: Prometheus metrics and the structured access log.

Both are off by default for now. With plain-number metrics read at scrape time and a batched
access log, recording costs about 20% more CPU per request on bench/gateway.py's request (was
~45%): +20% user-space instructions (callgrind; metrics +12%, access log +12%), +17-25% CPU
time in paired runs, about +10 us p50 at concurrency 1. That is still above issue 4's 5% goal,
so a deployment opts in. The embedded demo turns both on. Off, their whole cost leaves the
request path.
"""

from __future__ import annotations

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
    tracing: TracingConfig = TracingConfig()
    """OpenTelemetry spans per request, exported over OTLP/HTTP (off by default)."""
