"""Server-side settings: where the gateway listens, how it bounds clients, where state lives,
and the gateway-wide admission queue.

Each bound here is the config face of a component's parameter (``headway.http.Limits``,
``headway.guard.LoadShedder``); defaults are those components' defaults unless noted, with the
same sources.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from headway.http import Limits
from headway.store import open_control_store

from ._base import Section

__all__ = [
    "AdmissionConfig",
    "ServerConfig",
    "ServerLimits",
    "StateConfig",
    "parse_host_port",
]

#: Shortest ``server.admin_token`` accepted.
ADMIN_TOKEN_MIN_CHARS = 16

_HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")


def parse_host_port(value: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` -> ``("127.0.0.1", 8080)``; ``"[::1]:8080"`` -> ``("::1", 8080)``.

    Raises ``ValueError`` saying what is wrong (missing port, port out of range, bad host).
    """
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or not value[end + 1 :].startswith(":"):
            raise ValueError(f"expected '[ipv6]:port', got {value!r}")
        host, port_text = value[1:end], value[end + 2 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid IPv6 address {host!r} in {value!r}") from None
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or not host:
            raise ValueError(f"expected 'host:port', got {value!r}")
        if ":" in host:
            raise ValueError(f"an IPv6 address must be bracketed, e.g. '[::1]:8080'; got {value!r}")
        if not _HOSTNAME.fullmatch(host):
            raise ValueError(f"invalid host {host!r} in {value!r}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"port must be an integer 0-65535, got {port_text!r} in {value!r}")
    return host, int(port_text)


class ServerLimits(Section):
    """Bounds on what one client connection may cost (``headway.http.Limits``)."""

    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1)
    """Largest request body accepted (413 beyond). 16 MiB: nginx's 1 MiB default is too small
    for long contexts and base64 images."""
    max_header_bytes: int = Field(default=16 * 1024, ge=256)
    """Largest header block (Node.js http.maxHeaderSize default 16 KiB)."""
    max_headers: int = Field(default=100, ge=1)
    """Most header fields in one request (Apache LimitRequestFields default 100)."""
    max_url_bytes: int = Field(default=8190, ge=16)
    """Longest request line (Apache LimitRequestLine default 8190)."""
    max_pipelined: int = Field(default=16, ge=1)
    """Pipelined requests parsed ahead of the running one before reading pauses."""
    header_timeout: float = Field(default=30.0, gt=0)
    """Seconds from a request's first byte to the end of its headers (slowloris guard;
    hyper/granian default 30 s)."""
    body_timeout: float = Field(default=60.0, gt=0)
    """Seconds allowed between two reads of a request body (nginx client_body_timeout 60 s)."""
    keepalive_timeout: float = Field(default=75.0, gt=0)
    """Seconds an idle keep-alive connection is kept (nginx keepalive_timeout 75 s)."""
    send_timeout: float = Field(default=60.0, gt=0)
    """Seconds allowed between two writes the client accepts (nginx send_timeout 60 s)."""
    stream_buffer_bytes: int = Field(default=64 * 1024, ge=1024)
    """Bytes buffered for a slow client before the upstream read pauses (asyncio's 64 KiB
    transport high-water mark)."""

    def to_http_limits(self) -> Limits:
        """The ``headway.http.Limits`` of the API server."""
        return Limits(
            max_url_bytes=self.max_url_bytes,
            max_header_bytes=self.max_header_bytes,
            max_headers=self.max_headers,
            max_body_bytes=self.max_body_bytes,
            header_timeout=self.header_timeout,
            body_timeout=self.body_timeout,
            keepalive_timeout=self.keepalive_timeout,
            send_timeout=self.send_timeout,
            write_high_water=self.stream_buffer_bytes,
            max_pipelined=self.max_pipelined,
        )


class ServerConfig(Section):
    """Listening sockets, worker processes, shutdown and request deadlines."""

    listen: str = "127.0.0.1:8080"
    """Address of the OpenAI-compatible API, 'host:port' ('[::1]:8080' for IPv6)."""
    admin_listen: str = "127.0.0.1:8081"
    """Address of the admin API (health, metrics, config); keep it private."""
    admin_token: SecretStr | None = None
    """Bearer token the admin API asks for ('Authorization: Bearer <token>'), e.g.
    '${HEADWAY_ADMIN_TOKEN}'. Set: every /api/* call and the dashboard's data need it. Unset:
    read-only calls are open (keep admin_listen on loopback) and write actions (reload, drain)
    are refused. /healthz, /readyz and /metrics never ask for it (probes and scrapers)."""
    workers: int = Field(default=1, ge=1)
    """Worker processes sharing the listening port via SO_REUSEPORT."""
    drain_timeout: float = Field(default=30.0, gt=0)
    """Seconds in-flight requests and streams get to finish after SIGTERM (Kubernetes'
    terminationGracePeriodSeconds default is 30 s)."""
    default_timeout: float = Field(default=600.0, gt=0)
    """Request deadline in seconds when the client sends none (long generations take minutes;
    the OpenAI Python client's own default is 600 s)."""
    max_timeout: float = Field(default=3600.0, gt=0)
    """Cap on a deadline the client asks for, in seconds."""
    limits: ServerLimits = ServerLimits()
    """Per-connection bounds (body, headers, slow clients)."""

    @field_validator("admin_token")
    @classmethod
    def _check_token(cls, value: SecretStr | None) -> SecretStr | None:
        # 16 characters: a guessable token would make the admin API an open door (our floor;
        # 'openssl rand -hex 32' gives 64). The token itself is never echoed.
        if value is not None and len(value.get_secret_value()) < ADMIN_TOKEN_MIN_CHARS:
            raise ValueError(
                f"admin_token must be at least {ADMIN_TOKEN_MIN_CHARS} characters "
                "(e.g. from 'openssl rand -hex 32')"
            )
        return value

    @field_validator("listen", "admin_listen")
    @classmethod
    def _check_address(cls, value: str) -> str:
        parse_host_port(value)
        return value

    @model_validator(mode="after")
    def _check_relations(self) -> Self:
        if self.default_timeout > self.max_timeout:
            raise ValueError(
                f"default_timeout ({self.default_timeout:g}) must not exceed "
                f"max_timeout ({self.max_timeout:g})"
            )
        api, admin = parse_host_port(self.listen), parse_host_port(self.admin_listen)
        if api == admin and api[1] != 0:
            raise ValueError(f"listen and admin_listen are the same address ({self.listen})")
        return self

    @property
    def listen_address(self) -> tuple[str, int]:
        """``listen`` as ``(host, port)``."""
        return parse_host_port(self.listen)

    @property
    def admin_address(self) -> tuple[str, int]:
        """``admin_listen`` as ``(host, port)``."""
        return parse_host_port(self.admin_listen)


_STATE_SCHEMES = ("memory", "redis", "rediss")


class StateConfig(Section):
    """Where shared state (quotas, breaker state across workers) lives."""

    url: str = "memory://"
    """'memory://' (one process, no external service) or 'redis://host:port/db'
    ('rediss://' for TLS)."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in _STATE_SCHEMES:
            raise ValueError(
                f"unsupported state scheme {parts.scheme or value!r} "
                f"(expected one of: {', '.join(_STATE_SCHEMES)})"
            )
        if parts.scheme == "memory":
            if parts.netloc or parts.path not in ("", "/"):
                raise ValueError("memory state takes no host or path: use 'memory://'")
            return value
        if not parts.hostname:
            raise ValueError(
                f"a redis URL needs a host, e.g. 'redis://127.0.0.1:6379/0'; got {value!r}"
            )
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError(f"invalid port in {value!r}") from None
        db = parts.path.lstrip("/")
        if db and not db.isdigit():
            raise ValueError(f"redis database must be a number, got {db!r}")
        return value

    control_url: str | None = None
    """The control-plane store (config versions, audit log, rollout state):
    'sqlite:///relative.db', 'sqlite:////absolute.db', a plain file path (SQLite), or
    'postgresql://user@host:port/db' shared by every instance. None (the default) keeps
    rollout state in memory: a rollout in progress does not survive a restart."""

    @field_validator("control_url")
    @classmethod
    def _check_control_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.strip():
            raise ValueError("control_url must not be empty (omit it for in-memory state)")
        if "://" not in value:  # a plain path names a SQLite file
            value = "sqlite:///" + value
        # The store's own parser: what passes here is what the gateway opens (it opens nothing
        # yet, so validation does no I/O).
        open_control_store(value)
        return value


class AdmissionConfig(Section):
    """Gateway-wide priority admission and load shedding (``headway.guard.LoadShedder``)."""

    max_inflight: int = Field(default=512, ge=1)
    """Requests served at once across all models before newcomers queue."""
    max_queue: int = Field(default=1024, ge=0)
    """Requests waiting for a slot; beyond it the lowest priority is refused first."""
    queue_target_delay: float = Field(default=0.05, gt=0)
    """CoDel target in seconds: a queue whose minimum delay stays above it is overloaded.
    Larger than folly's 5 ms because LLM requests last seconds, not milliseconds."""
    queue_interval: float = Field(default=0.5, gt=0)
    """CoDel interval in seconds over which the minimum queue delay is measured (folly uses
    100 ms for its 5 ms target; scaled up likewise for LLM request lengths)."""

    @model_validator(mode="after")
    def _check_relations(self) -> Self:
        if self.queue_target_delay >= self.queue_interval:
            raise ValueError(
                f"queue_target_delay ({self.queue_target_delay:g}) must be smaller than "
                f"queue_interval ({self.queue_interval:g})"
            )
        return self
