"""One API request's outcome as it is filled in: what the gateway records per request.

Two implementations of one shape (:class:`Observation`): :class:`PyObservation` here, the
reference, and ``headway.observe._speedups.Outcome``, its C twin, built at install when a C
compiler is there (a tenth of the cost to make; the access log and the metrics tally read its
fields straight from the struct). :data:`record_outcome` makes whichever is there.

The compiled request path (``headway._native``) sees only the protocol, so it reads and writes
the fields of either by name: a compiled module typed with one concrete class would reject the
other at run time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

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


def py_record_outcome(
    pending: list[Observation],
    start: float,
    now: float,
    route: str,
    tenant: str | None,
    model: str | None,
    endpoint: str | None,
    request_id: str | None,
    attributes: Mapping[str, object] | None,
    prompt: int | None,
    completion: int | None,
    trace: RequestTrace | None,
    status: int,
    reason: str,
    stream: bool,
    first: float | None,
    stamps: list[float] | None,
) -> bool:
    """An answer's outcome, made complete in one call and appended to ``pending``; True when
    ``pending`` was empty (the caller then schedules the drain). ``first``: a stream's first
    chunk's time (None: a whole answer); ``stamps``: a stream's chunk times (None: not kept).
    The reference for ``_speedups.record_outcome``."""
    obs = PyObservation(start, route)
    obs.tenant = tenant
    obs.model = model
    obs.endpoint = endpoint
    obs.request_id = request_id
    obs.attributes = attributes
    obs.prompt = prompt
    obs.completion = completion
    obs.trace = trace
    obs.status = status
    obs.reason = reason
    obs.stream = stream
    obs.latency = now - start
    if first is None:
        obs.generation = obs.latency  # a whole answer's tokens come with its body
    else:
        obs.ttft = first - start
        if stamps is not None:
            if not stamps:
                raise TypeError("record_outcome: stamps must be a non-empty list")
            obs.stamps = stamps
            obs.generation = stamps[-1] - first  # first to last chunk: the decode time
    was_empty = not pending
    pending.append(obs)
    return was_empty


RecordOutcome = Callable[
    [
        list[Observation],
        float,
        float,
        str,
        str | None,
        str | None,
        str | None,
        str | None,
        Mapping[str, object] | None,
        int | None,
        int | None,
        RequestTrace | None,
        int,
        str,
        bool,
        float | None,
        list[float] | None,
    ],
    bool,
]


def _pick() -> RecordOutcome:
    try:  # built from _speedups_outcome.c at install when a C compiler is there (see setup.py)
        from headway.observe._speedups import record_outcome
    except ImportError:  # pragma: no cover - the Python twin serves
        return py_record_outcome
    return record_outcome


#: ``record_outcome(pending, ...)`` makes an answer's outcome in one call and queues it.
record_outcome = _pick()
