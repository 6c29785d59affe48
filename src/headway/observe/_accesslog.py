"""Structured access log: one JSON line per request, with the decisions taken on it.

Guarantees: a line holds only the fields :meth:`AccessLog.record` names, so secrets (API keys,
headers) and content (prompts, completions) cannot reach it; the tenant is its configured name,
never its key; the model name is client input, so it is logged only if it is in the configured
allow-list (when one is given) and looks like a model id (else ``"other"``/``"invalid"``), which
keeps a prompt pasted into the ``model`` field out of the log. A
disabled log costs one attribute check: nothing is formatted. Lines are serialised with orjson
and written synchronously; give it a buffered stream, or a logger whose handler is a
``QueueHandler``, so the event loop never waits on a disk.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import IO

import orjson

from ._labels import OTHER
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
            self._write = lambda line: text.write(line.decode())
        else:
            binary: IO[bytes] = sink  # type: ignore[assignment]
            self._write = binary.write

    @property
    def active(self) -> bool:
        """Whether a record would be written now (the logger's level is checked live)."""
        if not self.enabled:
            return False
        return self._logger is None or self._logger.isEnabledFor(logging.INFO)

    def _to_logger(self, line: bytes) -> None:
        assert self._logger is not None
        self._logger.info(line[:-1].decode())

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
    ) -> None:
        """One request: times in seconds (logged in ms); ``reason`` is the refusal or error
        reason, ``attributes`` the request context's attributes (the decision trail)."""
        if not self.enabled:
            return
        if self._logger is not None and not self._logger.isEnabledFor(logging.INFO):
            return
        if model is not None:
            if self._models is not None:
                if model not in self._models:
                    model = OTHER
            elif _MODEL_ID.fullmatch(model) is None:
                model = "invalid"
        line = {
            "ts": dt.datetime.fromtimestamp(self._clock(), dt.UTC),
            "request_id": request_id,
            "tenant": tenant,
            "route": route,
            "model": model,
            "endpoint": endpoint,
            "status": status,
            "reason": reason,
            "latency_ms": round(latency * 1000.0, 3),
            "ttft_ms": None if ttft is None else round(ttft * 1000.0, 3),
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "stream": stream,
            "decisions": decision_reasons(attributes),
        }
        self._write(orjson.dumps(line, option=orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE))
