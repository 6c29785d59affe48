"""Structured access log: one JSON line per request, with the decisions taken on it.

Guarantees: a line holds only the fields :meth:`AccessLog.record` names, so secrets (API keys,
headers) and content (prompts, completions) cannot reach it; the tenant is its configured name,
never its key; the model name is client input, so it is logged only if it is in the configured
allow-list (when one is given) and looks like a model id (else ``"other"``/``"invalid"``), which
keeps a prompt pasted into the ``model`` field out of the log. A disabled log costs one
attribute check: nothing is formatted.

Lines are serialised with orjson (a dict per line: measured faster than any template or
orjson's dataclass path) and a batch of them goes to the sink in one write. The gateway hands
over a batch per event-loop turn (:meth:`AccessLog.write_outcomes`, from its ``Recorder``),
after that turn's answers are written, so formatting never delays an answer. Give it a
buffered stream, or a logger whose handler is a ``QueueHandler``, so the loop never waits on a
disk.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, Any, NamedTuple

import orjson

from ._labels import OTHER
from ._outcome import Logged
from ._trail import decision_reasons

# Our choice: long enough for any real model id (``org/name:tag@rev``); no spaces, no prose.
MAX_MODEL_CHARS = 100
_MODEL_ID = re.compile(rf"[A-Za-z0-9._:/@+\-]{{1,{MAX_MODEL_CHARS}}}")

Sink = IO[bytes] | IO[str] | logging.Logger


class AccessLog:
    """Writes access-log lines to a binary or text stream, or to a logger at INFO."""

    __slots__ = ("_clock", "_logger", "_models", "_write", "enabled")

    def __init__(
        self,
        sink: Sink,
        *,
        clock: Callable[[], float] = time.time,
        enabled: bool = True,
        models: Iterable[str] | None = None,
    ) -> None:
        # ``clock`` gives wall-clock seconds since the epoch (``ts``), not the monotonic scale.
        self._clock = clock
        self.enabled = enabled
        self._models = None if models is None else frozenset(models)
        self._logger: logging.Logger | None = None
        self._write: Callable[[bytes], object]
        if isinstance(sink, logging.Logger):
            self._logger = sink
            self._write = self._to_logger
        elif isinstance(sink, io.TextIOBase):
            text = sink
            self._write = lambda lines: text.write(lines.decode())
        else:
            binary: IO[bytes] = sink  # type: ignore[assignment]
            self._write = binary.write

    @property
    def active(self) -> bool:
        """Whether a record would be written now (the logger's level is checked live)."""
        if not self.enabled:
            return False
        return self._logger is None or self._logger.isEnabledFor(logging.INFO)

    def _to_logger(self, lines: bytes) -> None:
        assert self._logger is not None
        for line in lines.decode().splitlines():  # a logger takes one line per call
            self._logger.info(line)

    def record(
        self,
        *,
        request_id: str | None,
        tenant: str | None,
        model: str | None,
        status: int,
        latency: float,
        endpoint: str | None = None,
        route: str | None = None,
        ttft: float | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        stream: bool = False,
        reason: str | None = None,
        attributes: Mapping[str, object] | None = None,
        trace_id: str | None = None,
    ) -> None:
        """One request, written now: times in seconds (logged in ms); ``reason`` is the refusal
        or error reason, ``attributes`` the request context's attributes (the decision trail),
        ``trace_id`` its OpenTelemetry trace (only while tracing is on)."""
        self.write_outcomes(
            (
                _Line(
                    route,
                    model,
                    tenant,
                    status,
                    reason,
                    latency,
                    prompt_tokens,
                    completion_tokens,
                    endpoint,
                    ttft,
                    stream,
                    request_id,
                    attributes,
                    trace_id,
                ),
            )
        )

    def write_outcomes(self, outcomes: Sequence[Logged]) -> None:
        """One line per finished request, in order, all stamped with this moment and written
        together: the gateway writes a batch per event-loop turn, so a line's time is within a
        turn of its answer. With a model allow-list, the C formatter writes the lines when it
        was built (the same bytes, a quarter of the instructions)."""
        if not outcomes or not self.active:
            return
        now = self._clock()
        models = self._models
        if _format_lines is not None and _iso_utc is not None and models is not None:
            try:
                data = _format_lines(_iso_utc(now), outcomes, models, OTHER, decision_reasons)
            except (TypeError, ValueError):  # an odd value: the Python path says what it makes
                data = _lines(_from_timestamp(now, _UTC), outcomes, models)
        else:
            data = _lines(_from_timestamp(now, _UTC), outcomes, models)
        self._write(data)

    def set_models(self, models: Iterable[str] | None) -> None:
        """Replace the model allow-list (on config reload)."""
        self._models = None if models is None else frozenset(models)


def _lines(ts: dt.datetime, outcomes: Sequence[Logged], models: frozenset[str] | None) -> bytes:
    """The reference formatting: a dict per line, serialised by orjson (measured faster than a
    bytes template or orjson's dataclass path)."""
    lines = []
    for o in outcomes:
        model = o.model
        if model is not None:
            if models is not None:
                if model not in models:
                    model = OTHER
            elif _MODEL_ID.fullmatch(model) is None:
                model = "invalid"
        ttft = o.ttft
        attributes = o.attributes
        line = {
            "ts": ts,
            "request_id": o.request_id,
            "tenant": o.tenant,
            "route": o.route,
            "model": model,
            "endpoint": o.endpoint,
            "status": o.status,
            "reason": o.reason,
            # round(x) / 1000: the same milliseconds as round(ms, 3), at a third of the cost.
            "latency_ms": round(o.latency * 1e6) / 1000.0,
            "ttft_ms": None if ttft is None else round(ttft * 1e6) / 1000.0,
            "prompt_tokens": o.prompt,
            "completion_tokens": o.completion,
            "stream": o.stream,
            "decisions": decision_reasons(attributes) if attributes else [],
        }
        trace_id = o.trace_id
        if trace_id is not None:
            line["trace_id"] = trace_id
        lines.append(_dumps(line, option=_OPTIONS))
    return lines[0] if len(lines) == 1 else b"".join(lines)


class _Line(NamedTuple):
    """:meth:`AccessLog.record`'s arguments as a :class:`Logged`."""

    route: str | None
    model: str | None
    tenant: str | None
    status: int
    reason: str | None
    latency: float
    prompt: int | None
    completion: int | None
    endpoint: str | None
    ttft: float | None
    stream: bool
    request_id: str | None
    attributes: Mapping[str, object] | None
    trace_id: str | None


_from_timestamp = dt.datetime.fromtimestamp
_UTC = dt.UTC
_dumps = orjson.dumps
_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE

_format_lines: Callable[[bytes, Sequence[Any], frozenset[str], str, Any], bytes] | None
_iso_utc: Callable[[float], bytes] | None
try:  # built from _speedups.c at install when a C compiler is there (see setup.py)
    from ._speedups import format_lines, iso_utc

    _format_lines, _iso_utc = format_lines, iso_utc
except ImportError:  # pragma: no cover - the pure-Python path formats every line
    _format_lines = _iso_utc = None
