"""OpenTelemetry tracing settings (``observe.tracing``): where spans go and how many are kept.

Off by default. The OpenTelemetry SDK is an optional extra (``pip install 'headway[otel]'``), so
this section never imports it: turning tracing on only checks that it can be found, and a config
that turns it on without the SDK installed is rejected at ``observe.tracing`` (``headway check``
says so before a deploy does). Defaults are the OpenTelemetry SDK's own (its environment
variable specification), so a gateway behaves like any other OTel-instrumented service.
"""

from __future__ import annotations

import importlib.util
import re
from typing import Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from ._base import Section

__all__ = ["OTEL_MODULES", "TracingConfig", "missing_otel_module"]

#: What tracing imports when it is on: the SDK and the OTLP/HTTP (protobuf) span exporter.
OTEL_MODULES = (
    "opentelemetry.sdk.trace",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
)
# RFC 9110 5.6.2 token: the characters a header field name may use.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# RFC 9110 5.5: a field value never holds CR, LF or NUL (they would split the request).
_BAD_VALUE = re.compile(r"[\r\n\x00]")


def missing_otel_module() -> str | None:
    """The first module tracing needs that cannot be imported here, or ``None``."""
    for name in OTEL_MODULES:
        try:
            found = importlib.util.find_spec(name)
        except (ImportError, ValueError):  # a parent package missing, or blocked in sys.modules
            found = None
        if found is None:
            return name
    return None


class TracingConfig(Section):
    """Spans for every API request (admission, upstream attempts, retries, hedges, fallbacks),
    exported over OTLP/HTTP to any OpenTelemetry collector."""

    enabled: bool = False
    """Trace requests and send the spans to `endpoint`. Needs the OpenTelemetry SDK
    (pip install 'headway[otel]'). Off: no span is made and the client's traceparent is
    forwarded upstream unchanged."""
    endpoint: str = "http://127.0.0.1:4318/v1/traces"
    """OTLP/HTTP traces URL of the collector (the OTLP default port 4318 and path
    /v1/traces)."""
    service_name: str = Field(default="headway", min_length=1)
    """The service.name resource attribute the spans carry."""
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    """Share of new traces kept (0..1); a request with a traceparent follows its caller's
    sampling decision instead (parent-based; the SDK's default sampler keeps everything)."""
    export_timeout: float = Field(default=10.0, gt=0)
    """Seconds one export request may take (OTEL_EXPORTER_OTLP_TIMEOUT default 10 s)."""
    batch_delay: float = Field(default=5.0, gt=0)
    """Seconds between two exports of finished spans (OTEL_BSP_SCHEDULE_DELAY default 5 s)."""
    max_queue: int = Field(default=2048, ge=1)
    """Finished spans buffered for export; beyond it new spans are dropped, never the request
    (OTEL_BSP_MAX_QUEUE_SIZE default 2048)."""
    max_batch: int = Field(default=512, ge=1)
    """Spans sent in one export request (OTEL_BSP_MAX_EXPORT_BATCH_SIZE default 512)."""
    headers: dict[str, SecretStr] = {}
    """Headers sent with every export (e.g. a collector's API key); write values as
    '${ENV_VAR}' to keep them out of the file."""

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https"):
            raise ValueError(
                f"expected an http(s) URL such as 'http://127.0.0.1:4318/v1/traces', got {value!r}"
            )
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError(f"invalid port in {value!r}") from None
        if not parts.hostname:
            raise ValueError(f"missing host in {value!r}")
        return value

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, secret in value.items():
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"invalid header name {name!r}")
            if _BAD_VALUE.search(secret.get_secret_value()):
                raise ValueError(f"the value of header {name!r} holds a line break or NUL")
        return value

    @model_validator(mode="after")
    def _check_relations(self) -> Self:
        if self.max_batch > self.max_queue:
            raise ValueError(
                f"max_batch ({self.max_batch}) must not exceed max_queue ({self.max_queue})"
            )
        if self.enabled:
            missing = missing_otel_module()
            if missing is not None:
                raise ValueError(
                    f"tracing is enabled but {missing} cannot be imported: install the "
                    "OpenTelemetry SDK and OTLP exporter (pip install 'headway[otel]') or set "
                    "enabled: false"
                )
        return self
