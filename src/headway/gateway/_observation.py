"""One API request's outcome as it is filled in: what the gateway records per request.

Two implementations of one shape (:class:`Observation`): :class:`PyObservation` here, the
reference, and ``headway.observe._speedups.Outcome``, its C twin, built at install when a C
compiler is there (a tenth of the cost to make; the access log and the metrics tally read its
fields straight from the struct). :func:`new_observation` is whichever is there.

The compiled request path (``headway._native``) sees only the protocol, so it reads and writes
the fields of either by name: a compiled module typed with one concrete class would reject the
other at run time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from headway.observe import RequestTrace


class Observation(Protocol):
    """The fields of one request's outcome (:class:`headway.observe.Counted` and ``Logged``)."""

    start: float
    route: str
    tenant: str | None
    model: str | None
    endpoint: str | None
    request_id: str | None
    attributes: Mapping[str, object] | None
    prompt: int | None
    completion: int | None
    ttft: float | None
    stamps: list[float] | None
    generation: float
    stream: bool
    trace: RequestTrace | None
    trace_id: str | None
    status: int
    reason: str
    latency: float


class PyObservation:
    """One API request's outcome (:class:`headway.observe.Counted` and ``Logged``), filled in as it
    progresses. Made only while its runtime is observed, so the path without it allocates
    nothing more. The reference for ``headway.observe._speedups.Outcome``, its C twin, which
    is what ``Observation`` is when the extension was built (a tenth of the cost to make, and
    the access log and the metrics tally read its fields straight from the struct)."""

    __slots__ = (
        "attributes",
        "completion",
        "endpoint",
        "generation",
        "latency",
        "model",
        "prompt",
        "reason",
        "request_id",
        "route",
        "stamps",
        "start",
        "status",
        "stream",
        "tenant",
        "trace",
        "trace_id",
        "ttft",
    )

    def __init__(self, start: float, route: str) -> None:
        self.start = start
        self.route = route
        self.tenant: str | None = None
        self.model: str | None = None
        self.endpoint: str | None = None
        self.request_id: str | None = None
        self.attributes: Mapping[str, object] | None = None
        self.prompt: int | None = None
        self.completion: int | None = None
        self.ttft: float | None = None
        #: A streamed answer's chunk arrival times (while metrics are on): its chunk gaps.
        self.stamps: list[float] | None = None
        self.generation = 0.0
        self.stream = False
        self.trace: RequestTrace | None = None
        self.trace_id: str | None = None
        self.status = 0
        self.reason = ""
        self.latency = 0.0


def _pick() -> Callable[[float, str], Observation]:
    try:  # built from _speedups_outcome.c at install when a C compiler is there (see setup.py)
        from headway.observe._speedups import Outcome
    except ImportError:  # pragma: no cover - the Python class serves
        return PyObservation
    made: Callable[[float, str], Any] = Outcome
    return made


#: Makes a request's observation: ``new_observation(start, route)``.
new_observation = _pick()
