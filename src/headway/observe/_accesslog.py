"""Structured access log: one JSON line per request, with the decisions taken on it.

Guarantees: a line holds only the fields :meth:`AccessLog.record` names, so secrets (API keys,
headers) and content (prompts, completions) cannot reach it; the tenant is its configured name,
never its key; the model name is client input, so it is logged only if it is in the configured
allow-list (when one is given) and looks like a model id (else ``"other"``/``"invalid"``), which
keeps a prompt pasted into the ``model`` field out of the log. A disabled log costs one
attribute check: nothing is formatted.

Lines are written in C when it was built (``_speedups.format_lines``), else by the reference
formatter in ``_accesslog_lines.py`` (a dict per line serialised by orjson), which also takes a
batch with a value of an unexpected type; a batch of lines goes to the sink in one write. This
module is compiled (``headway._native``); the reference stays Python, so it takes any value.
The gateway hands over a batch per event-loop turn (:meth:`AccessLog.write_outcomes`, from its
``Recorder``), after that turn's answers are written, so formatting never delays an answer.
Give it a buffered stream, or a logger whose handler is a ``QueueHandler``, so the loop never
waits on a disk.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, Any, NamedTuple

from ._accesslog_lines import _lines
from ._labels import OTHER
from ._outcome import Logged
from ._trail import decision_reasons

Sink = IO[bytes] | IO[str] | logging.Logger


class AccessLog:
    """Writes access-log lines to a binary or text stream, or to a logger at INFO."""

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
        # The C formatter's parts, bound once: module names from other modules are a dict
        # lookup at every use in compiled code, and this runs every loop turn.
        self._c_format = _format_lines
        self._c_iso = _iso_utc
        self._decisions = decision_reasons
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
        c_format, c_iso = self._c_format, self._c_iso
        if c_format is not None and c_iso is not None and models is not None:
            try:
                data = c_format(c_iso(now), outcomes, models, OTHER, self._decisions)
            except (TypeError, ValueError):  # an odd value: the Python path says what it makes
                data = _lines(_from_timestamp(now, _UTC), outcomes, models)
        else:
            data = _lines(_from_timestamp(now, _UTC), outcomes, models)
        self._write(data)

    def set_models(self, models: Iterable[str] | None) -> None:
        """Replace the model allow-list (on config reload)."""
        self._models = None if models is None else frozenset(models)


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

_format_lines: Callable[[bytes, Sequence[Any], frozenset[str], str, Any], bytes] | None
_iso_utc: Callable[[float], bytes] | None
try:  # built from _speedups.c at install when a C compiler is there (see setup.py)
    from ._speedups import format_lines, iso_utc

    _format_lines, _iso_utc = format_lines, iso_utc
except ImportError:  # pragma: no cover - the pure-Python path formats every line
    _format_lines = _iso_utc = None
