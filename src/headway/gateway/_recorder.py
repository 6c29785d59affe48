"""Every API request's outcome, counted and logged in batches after its answer is written.

A request that is observed (metrics, access log, tracing or SLOs on) carries its fields as they
become known (:class:`Seen`). When its answer is out, :meth:`Recorder.record` makes its outcome
in one call and queues it (a stream's, with its first chunk's time and its chunk times, when
its relay ends); :meth:`Recorder.drain` hands the whole batch to the SLO book, the metrics,
the access log and the tracer. Why batches: per request, the data path then pays one clock
read and one list append, and the bookkeeping runs once per batch with one call per sink
instead of several calls per request.

A batch is what ends within ``observe.record_delay`` (10 ms) of its first request (or
:data:`MAX_BATCH` requests, if sooner), drained from a loop timer after that turn's answers
are written. Not one loop turn's answers: a drain has a fixed cost (~6k instructions: the
metrics' clock read and window check, one log write, a call per sink) that a loop turn's
handful of answers shared badly, ~1k instructions a request at saturation; 10 ms of traffic
shares it among hundreds. Latency runs from the request's arrival at the handler to its
answer being handed to the protocol, so the delay is in no number. Readers (``/metrics``,
the admin API) call :meth:`Recorder.drain` first and see every answered request; the
once-a-second timeline is at most one delay behind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Final

from headway.core import Clock
from headway.http.client import UpstreamResponse
from headway.observe import AccessLog, GatewayMetrics, RequestTrace, SloBook

from ._errors import http_error, reason_label
from ._observation import Observation, record_outcome
from ._openai import Usage

log: Final = logging.getLogger("headway.gateway")

# The batch that drains at once, whatever the delay: at saturation (~20-30k requests/s a
# worker) 10 ms is a batch of ~200-300 requests.
MAX_BATCH: Final = 512


def new_request_id() -> str:
    """A request id: the wall clock in nanoseconds, in hex (unique per process, sortable)."""
    return "%x" % time.time_ns()  # noqa: UP031 - compiled, an f-string is a format() call


class Seen:
    """An API request's fields as they become known (the gateway's claim on a request is one:
    no second object a request). Compiled (headway._native), it is set field by field at the
    cost of a store each; when observed, the outcome is made in one call when the answer is
    out (:meth:`Recorder.record`; a stream's by its relay when it ends)."""

    def __init__(self, start: float, route: str, trace: RequestTrace | None) -> None:
        self.start = start
        self.route = route
        self.trace = trace
        self.tenant: str | None = None
        self.model: str | None = None
        self.endpoint: str | None = None
        self.request_id: str | None = None
        self.attributes: dict[str, Any] | None = None
        self.prompt: int | None = None
        self.completion: int | None = None
        self.stream = False


# nginx's status for a request whose client went away before the answer was complete.
CLIENT_CLOSED: Final = 499


#: Chunk arrival times a stream holds before it hands their gaps to the metrics (our choice:
#: 256 floats, ~8 KiB; a ten-minute stream at 50 tokens/s would otherwise hold ~1 MB).
STREAM_STAMPS_HELD: Final = 256


class StreamWatch:
    """What an observed stream's relay keeps: its first chunk's time and, while metrics are
    on, its chunk times (stamped by the upstream response as it hands each chunk over). Why a
    compiled object: the relay is an async generator, which mypyc cannot compile, and this
    bookkeeping in it cost ~2k instructions a stream.

    Made as the streamed answer is handed to the server, just before its first chunk (already
    read by the attempt) is written: that moment is the stream's first-chunk time."""

    def __init__(self, recorder: Recorder, seen: Seen, response: UpstreamResponse) -> None:
        self._recorder = recorder
        self._seen = seen
        clock = recorder.clock
        self.first = first = clock.now()
        self.stamps: list[float] | None = None
        metrics = recorder.metrics
        if metrics is not None:
            self._metrics = metrics
            self.stamps = stamps = [first]
            # The watch itself is the hand-over callback: a bound method is an object a stream.
            response.stamp_chunks(stamps, clock, recorder.stamps_held, self)

    def __call__(self, stamps: list[float]) -> None:
        """A long stream's chunk gaps so far into the metrics now, so memory stays flat; the
        last stamp stays, to start the next gap."""
        self._metrics.stream_gaps(self._seen.model, stamps)
        del stamps[:-1]

    def ended(self, usage: Usage | None, error: BaseException | None, cancelled: bool) -> None:
        """The stream is over: its outcome, with the tokens ``usage`` reported, recorded."""
        seen = self._seen
        if usage is not None:
            seen.prompt = usage.prompt_tokens
            seen.completion = usage.completion_tokens
        status, reason = 200, "ok"
        if cancelled:
            status, reason = CLIENT_CLOSED, "client_closed"
        elif error is not None:
            # The 200 is already sent; the outcome counted is what the error maps to.
            err = http_error(error)
            status, reason = err.status, reason_label(err.reason)
        self._recorder.record(seen, status, reason, self.first, self.stamps)


class Recorder:
    """Queues answered requests' outcomes and records them in batches (see the module)."""

    def __init__(
        self,
        *,
        clock: Clock,
        metrics: GatewayMetrics | None,
        access_log: AccessLog | None,
        slos: SloBook | None,
        tracing: bool,
        delay: float = 0.0,
    ) -> None:
        self.clock = clock
        self._delay = delay
        self.metrics = metrics
        self.access_log = access_log
        self.slos = slos
        self.tracing = tracing
        # A stream's chunk times held before their gaps go to the metrics (a test lowers it).
        self.stamps_held = STREAM_STAMPS_HELD
        self._pending: list[Observation] = []
        self._attempts: list[tuple[str, int, float]] = []
        self._scheduled = False
        # Bound once: compiled, a module-level name from another module is a dict lookup a use.
        self._record_outcome = record_outcome
        # What a batch goes to, in order, decided once: the drain pays one call per sink.
        sinks: list[Callable[[list[Observation]], object]] = []
        if tracing:
            sinks.append(_trace_ids)
        if slos is not None:
            sinks.append(self._slos)
        if access_log is not None:
            sinks.append(access_log.write_outcomes)
        if tracing:
            sinks.append(_end_spans)
        self._sinks = tuple(sinks)

    def record(
        self,
        seen: Seen,
        status: int,
        reason: str,
        first: float | None = None,
        stamps: list[float] | None = None,
    ) -> None:
        """An answer (``seen``) ended with ``status``: its outcome, made in one call. A stream
        gives its first chunk's time (``first``: TTFT) and, while metrics are on, its chunk
        times (``stamps``: chunk gaps and decode time)."""
        request_id = seen.request_id
        if request_id is None:  # refused before it had a context (the log names it)
            request_id = new_request_id()
        attributes = seen.attributes
        if not attributes:  # no decision: the dict (a GC object) goes with its request
            attributes = None
        if self._record_outcome(
            self._pending,
            seen.start,
            self.clock.now(),
            seen.route,
            seen.tenant,
            seen.model,
            seen.endpoint,
            request_id,
            attributes,
            seen.prompt,
            seen.completion,
            seen.trace,
            status,
            reason,
            seen.stream,
            first,
            stamps,
        ):
            if not self._scheduled:
                self._schedule()
        elif len(self._pending) == MAX_BATCH:  # once: it may grow past until the turn ends
            self._drain_soon()

    @property
    def attempt(self) -> Callable[[tuple[str, int, float]], object]:
        """Takes one upstream attempt, ``(endpoint, status, seconds)`` (status 0: no HTTP
        response), for the metrics: a plain list append, so the attempt path pays no Python
        call. Attempts are counted with the next drain; every attempt belongs to a request
        that finishes, and its finish schedules one (an admin read drains at once)."""
        return self._attempts.append

    def _schedule(self) -> None:
        """Drain after the delay (0: at the end of this loop turn)."""
        self._scheduled = self._soon(self._delay, self._due)

    def _drain_soon(self) -> None:
        """A full batch drains at the end of this loop turn, after the turn's answers are
        written (not inside the request that filled it)."""
        self._soon(0.0, self.drain)

    def _soon(self, delay: float, callback: Callable[[], None]) -> bool:
        """``callback`` on the running loop after ``delay`` (0: at the end of this turn); True
        once set. With no loop running, drain at once: a stream closed by the garbage
        collector after its loop is gone must still be counted."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.drain()
            return False
        if delay > 0.0:
            loop.call_later(delay, callback)
        else:
            loop.call_soon(callback)
        return True

    def _due(self) -> None:
        self._scheduled = False
        self.drain()

    def drain(self) -> None:
        """Record every queued observation and attempt now. A sink that fails is logged and
        the others still get the batch (a metrics bug must not cost the access log)."""
        attempts = self._attempts  # cleared in place: the pools append to this very list
        batch = self._pending
        if not batch and not attempts:
            return
        if batch:
            self._pending = []
        metrics = self.metrics
        if metrics is not None:  # both at once: one clock read, one roll check
            try:
                metrics.record(batch, attempts)
            except Exception:
                log.exception("recording a batch in the metrics failed")
        attempts.clear()
        if not batch:
            return
        for sink in self._sinks:
            try:
                sink(batch)
            except Exception:
                log.exception("recording a batch in %s failed", getattr(sink, "__qualname__", sink))

    def _slos(self, batch: list[Observation]) -> None:
        slos = self.slos
        assert slos is not None
        for obs in batch:
            slos.record(obs.route, obs.model, obs.status, obs.latency, obs.ttft)


def _trace_ids(batch: list[Observation]) -> None:
    for obs in batch:
        if obs.trace is not None:
            obs.trace_id = obs.trace.trace_id


def _end_spans(batch: list[Observation]) -> None:
    for obs in batch:
        if obs.trace is not None:  # a stream's span ends here too: when it ended
            obs.trace.end(
                obs.status,
                obs.reason,
                request_id=obs.request_id,
                tenant=obs.tenant,
                model=obs.model,
                endpoint=obs.endpoint,
                stream=obs.stream,
                ttft=obs.ttft,
                prompt_tokens=obs.prompt,
                completion_tokens=obs.completion,
                attributes=obs.attributes,
            )
