"""What one finished API request tells the metrics and the access log, read in batches."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class Answered(Protocol):
    """What the metrics and the access log both read of one finished API request: times in
    seconds, token counts when the answer reported them."""

    @property
    def model(self) -> str | None: ...
    @property
    def tenant(self) -> str | None: ...
    @property
    def status(self) -> int: ...
    @property
    def latency(self) -> float: ...
    @property
    def prompt(self) -> int | None: ...
    @property
    def completion(self) -> int | None: ...


class Counted(Answered, Protocol):
    """What the metrics read: ``reason`` is ``ok`` or the refusal or error label,
    ``generation`` the decode time tokens/s divides by (a whole answer's: its latency)."""

    @property
    def route(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def generation(self) -> float: ...


class Logged(Answered, Protocol):
    """What the access log writes; ``attributes`` are the request context's attributes (its
    decision trail), ``trace_id`` its OpenTelemetry trace while tracing is on."""

    @property
    def route(self) -> str | None: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def endpoint(self) -> str | None: ...
    @property
    def ttft(self) -> float | None: ...
    @property
    def stream(self) -> bool: ...
    @property
    def request_id(self) -> str | None: ...
    @property
    def attributes(self) -> Mapping[str, object] | None: ...
    @property
    def trace_id(self) -> str | None: ...
