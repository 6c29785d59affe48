"""Observability switches: Prometheus metrics and the structured access log.

Both are off by default for now: recording costs about 30% of a worker's throughput today
(bench/gateway.py with HEADWAY_BENCH_OBSERVE=1; the goal is under 5%), so a deployment opts in
until that is fixed. The embedded demo turns both on. Off, their whole cost leaves the request
path.
"""

from __future__ import annotations

from ._base import Section

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
