"""Upstreams: the simulated model servers started in-process, and the pools of endpoints that
models are routed to, with each pool's per-endpoint guards (timeouts, breaker, outlier
ejection, adaptive concurrency).

Defaults follow the guard library's components and name the same sources; where the brief of
the gateway chose otherwise for LLM traffic, the comment says so.
"""

from __future__ import annotations

import re
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from headway.sim import FaultConfig, SimConfig

from ._base import Section
from ._keys import check_key_source
from ._server import parse_host_port

__all__ = [
    "AffinityConfig",
    "CircuitBreakerConfig",
    "ConcurrencyConfig",
    "EndpointConfig",
    "OutlierConfig",
    "PoolConfig",
    "PoolTimeoutsConfig",
    "SimFaultsConfig",
    "SimUpstreamConfig",
]

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
_SIM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# RFC 9110 token characters, the only ones a header name may contain.


class SimFaultsConfig(Section):
    """Injected faults of a simulated upstream (``headway.sim.FaultConfig``; rates are 0..1)."""

    error_rate: float = Field(default=0.0, ge=0, le=1)
    """Share of requests answered with ``error_status``."""
    error_status: int = Field(default=500, ge=400, le=599)
    """HTTP status of an injected error."""
    error_retry_after: float | None = Field(default=None, ge=0)
    """Retry-After seconds sent with an injected 429/503."""
    spike_rate: float = Field(default=0.0, ge=0, le=1)
    """Share of requests delayed by ``spike_seconds`` before the first token."""
    spike_seconds: float = Field(default=0.0, ge=0)
    """Extra latency of a spike."""
    hang_rate: float = Field(default=0.0, ge=0, le=1)
    """Share of requests that never answer."""
    reset_rate: float = Field(default=0.0, ge=0, le=1)
    """Share of requests whose connection is reset."""
    stall_rate: float = Field(default=0.0, ge=0, le=1)
    """Share of streams that stall mid-stream."""
    stall_after_chunks: int = Field(default=1, ge=0)
    """Chunks sent before a stall."""
    stall_seconds: float = Field(default=0.0, ge=0)
    """Length of a stall (0: forever)."""
    malformed_rate: float = Field(default=0.0, ge=0, le=1)
    """Share of streams that send a malformed chunk."""
    malformed_after_chunks: int = Field(default=1, ge=0)
    """Chunks sent before the malformed one."""

    @model_validator(mode="after")
    def _check_with_sim(self) -> Self:
        # The simulator is the authority on its faults: anything it would refuse is refused here.
        FaultConfig().updated(self.model_dump())
        return self

    def to_fault_config(self) -> FaultConfig:
        """The ``headway.sim.FaultConfig`` these settings describe."""
        return FaultConfig().updated(self.model_dump())


class SimUpstreamConfig(Section):
    """A simulated OpenAI-compatible model server started in-process, addressed as
    ``sim://NAME`` by pool endpoints (``headway.sim.SimServer``)."""

    name: str = Field(pattern=_NAME_PATTERN)
    """Name used in endpoint URLs: 'sim://NAME'."""
    models: tuple[str, ...] = Field(min_length=1)
    """Upstream model ids it serves (others get 404)."""
    ttft: float = Field(default=0.05, ge=0)
    """Base time to first token, seconds."""
    ttft_per_prompt_token: float = Field(default=0.0, ge=0)
    """Extra time to first token per prompt token (prefill), seconds."""
    tokens_per_second: float = Field(default=400.0, gt=0)
    """Decode speed of one sequence."""
    capacity: int = Field(default=32, ge=1)
    """Sequences decoded at once; later requests queue, so latency grows with load."""
    max_queue: int | None = Field(default=None, ge=0)
    """Requests waiting beyond capacity before 429 (null: unbounded, like vLLM)."""
    default_output_tokens: int = Field(default=64, ge=1)
    """Output length when the request sets no max_tokens."""
    embedding_dims: int = Field(default=64, ge=1)
    """Length of embedding vectors returned."""
    seed: int = 0
    """Seed of the fault RNG, so a fault sequence is reproducible."""
    faults: SimFaultsConfig = SimFaultsConfig()
    """Faults injected from the start (flip them at runtime through the sim admin API)."""

    def to_sim_config(self) -> SimConfig:
        """The ``headway.sim.SimConfig`` to start this server with (serves only ``models``)."""
        return SimConfig(
            models=self.models,
            strict_models=True,
            ttft_base=self.ttft,
            ttft_per_prompt_token=self.ttft_per_prompt_token,
            tokens_per_second=self.tokens_per_second,
            capacity=self.capacity,
            max_queue=self.max_queue,
            default_output_tokens=self.default_output_tokens,
            embedding_dims=self.embedding_dims,
            seed=self.seed,
            faults=self.faults.to_fault_config(),
        )


def check_endpoint_url(value: str) -> str:
    """Accept ``http(s)://host[:port][/base]`` or ``sim://NAME``; raise ``ValueError`` otherwise."""
    parts = urlsplit(value)
    if parts.scheme == "sim":
        if not _SIM_NAME.fullmatch(parts.netloc) or parts.path not in ("", "/"):
            raise ValueError(f"expected 'sim://NAME' naming an entry of sims, got {value!r}")
        return value
    if parts.scheme not in ("http", "https"):
        raise ValueError(
            f"unsupported scheme {parts.scheme or value!r} (expected http, https or sim)"
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(
            "an upstream URL takes no query, fragment or credentials (put keys in api_key)"
        )
    if not parts.netloc:
        raise ValueError(f"missing host in {value!r}")
    if ":" in parts.netloc.rsplit("]", 1)[-1]:
        parse_host_port(parts.netloc)
    elif not parts.hostname:
        raise ValueError(f"missing host in {value!r}")
    return value


def sim_name(url: str) -> str | None:
    """The sim an endpoint URL addresses (``sim://small-a`` -> ``small-a``), else ``None``."""
    return url[6:].rstrip("/") if url.startswith("sim://") else None


class EndpointConfig(Section):
    """One upstream server of a pool."""

    url: str
    """'http(s)://host:port[/base]' (base path before /v1/...) or 'sim://NAME' of a sims entry."""
    weight: float = Field(default=1.0, gt=0)
    """Relative share of traffic against the pool's other endpoints."""
    api_key: SecretStr | None = None
    """Sent upstream as 'Authorization: Bearer ...'; write '${ENV_VAR}' to keep it out of the
    file."""
    max_connections: int = Field(default=64, ge=1)
    """Connections to this endpoint at most, busy or idle (kept alive between requests); a
    request finding all of them busy waits for one, so keep it above the requests in flight
    you expect per endpoint."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return check_endpoint_url(value)


class AffinityConfig(Section):
    """What the 'prefix' balancer hashes so a conversation returns to the same endpoint (and
    its KV cache)."""

    key: str = "user"
    """'user' (the OpenAI 'user' field), 'header:<name>', or 'prompt_prefix'."""
    prefix_chars: int = Field(default=256, ge=1)
    """Characters of the prompt hashed by 'prompt_prefix'."""

    @field_validator("key")
    @classmethod
    def _check_key(cls, value: str) -> str:
        return check_key_source(value, ("user", "prompt_prefix"))


class PoolTimeoutsConfig(Section):
    """Per-attempt timeouts towards an endpoint, in seconds."""

    connect: float = Field(default=2.0, gt=0)
    """Opening a connection (TCP + TLS)."""
    ttft: float = Field(default=30.0, gt=0)
    """From sending the request to the first response byte (time to first token)."""
    stall: float = Field(default=15.0, gt=0)
    """Longest silence between two chunks of a streamed response."""
    total: float = Field(default=600.0, gt=0)
    """Whole attempt, including the full generation."""

    @model_validator(mode="after")
    def _check_relations(self) -> Self:
        for name in ("connect", "ttft", "stall"):
            value = getattr(self, name)
            if value > self.total:
                raise ValueError(f"{name} ({value:g}) must not exceed total ({self.total:g})")
        return self


class CircuitBreakerConfig(Section):
    """Per-endpoint circuit breaker (``headway.guard.BreakerConfig``); rates in percent."""

    failure_rate: float = Field(default=50.0, gt=0, le=100)
    """Failure percentage that opens the breaker (Resilience4j and Hystrix: 50%)."""
    slow_call_rate: float = Field(default=100.0, gt=0, le=100)
    """Slow-call percentage that opens it (Resilience4j: 100%)."""
    slow_call_seconds: float = Field(default=60.0, gt=0)
    """A call longer than this counts as slow (Resilience4j: 60 s)."""
    window: int = Field(default=100, ge=1)
    """Calls in the sliding window (Resilience4j: 100)."""
    minimum_calls: int = Field(default=20, ge=1)
    """Calls needed before rates count (Hystrix: 20)."""
    open_seconds: float = Field(default=30.0, gt=0)
    """How long it stays open before probing (Envoy base_ejection_time: 30 s)."""
    half_open_calls: int = Field(default=5, ge=1)
    """Probe calls allowed while half-open (Resilience4j uses 10; 5 decides sooner at LLM
    request rates)."""

    @model_validator(mode="after")
    def _check_relations(self) -> Self:
        if self.minimum_calls > self.window:
            raise ValueError(
                f"minimum_calls ({self.minimum_calls}) must not exceed window ({self.window}): "
                "the breaker could never open"
            )
        return self


class OutlierConfig(Section):
    """Outlier ejection: take a misbehaving endpoint out of rotation for a while (Envoy)."""

    consecutive_failures: int = Field(default=5, ge=1)
    """Failures in a row that eject an endpoint (Envoy consecutive_5xx: 5)."""
    base_ejection_seconds: float = Field(default=30.0, gt=0)
    """First ejection length, multiplied by the number of ejections (Envoy: 30 s)."""
    max_ejection_seconds: float = Field(default=300.0, gt=0)
    """Longest ejection (Envoy max_ejection_time: 300 s)."""
    max_ejection_percent: float = Field(default=50.0, ge=0, le=100)
    """Most of a pool ejected at once (Envoy: 10%, at least one host; 50% lets one of a
    two-endpoint pool go)."""

    @model_validator(mode="after")
    def _check_relations(self) -> Self:
        if self.base_ejection_seconds > self.max_ejection_seconds:
            raise ValueError(
                f"base_ejection_seconds ({self.base_ejection_seconds:g}) must not exceed "
                f"max_ejection_seconds ({self.max_ejection_seconds:g})"
            )
        return self


class ConcurrencyConfig(Section):
    """Per-endpoint concurrency limit (``headway.guard.ConcurrencyLimiter``)."""

    algorithm: Literal["gradient2", "aimd", "fixed"] = "gradient2"
    """'gradient2' and 'aimd' adapt the limit to latency (Netflix concurrency-limits);
    'fixed' keeps 'initial'."""
    initial: int = Field(default=20, ge=1)
    """Starting limit (Netflix initialLimit: 20)."""
    min: int = Field(default=4, ge=1)
    """Lowest adaptive limit (Netflix uses 20; LLM servers may only take a handful)."""
    max: int = Field(default=200, ge=1)
    """Highest adaptive limit (Netflix maxConcurrency: 200)."""

    @model_validator(mode="after")
    def _check_relations(self) -> Self:
        if not self.min <= self.initial <= self.max:
            raise ValueError(
                f"expected min <= initial <= max, got {self.min}, {self.initial}, {self.max}"
            )
        return self


class PoolConfig(Section):
    """A set of interchangeable endpoints serving the same models, with their guards."""

    name: str = Field(pattern=_NAME_PATTERN)
    """Referenced by models[].pool."""
    balancer: Literal["p2c", "ewma", "prefix"] = "p2c"
    """'p2c': least outstanding of two random picks; 'ewma': lowest latency estimate (peak
    EWMA); 'prefix': consistent hashing on 'affinity' for KV-cache reuse."""
    affinity: AffinityConfig = AffinityConfig()
    """Hash key of the 'prefix' balancer."""
    endpoints: tuple[EndpointConfig, ...] = Field(min_length=1)
    """The pool's servers."""
    timeouts: PoolTimeoutsConfig = PoolTimeoutsConfig()
    """Per-attempt timeouts."""
    breaker: CircuitBreakerConfig = CircuitBreakerConfig()
    """Per-endpoint circuit breaker."""
    outlier: OutlierConfig = OutlierConfig()
    """Per-endpoint outlier ejection."""
    concurrency: ConcurrencyConfig = ConcurrencyConfig()
    """Per-endpoint adaptive concurrency limit."""
