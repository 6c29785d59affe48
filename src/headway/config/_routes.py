"""Models as clients see them: the public name, the pool behind it, and the per-route guards
(retries with a budget, optional hedging, fallbacks, response cache, deadline override)."""

from __future__ import annotations

from typing import Any, Self

from pydantic import Field, model_validator

from ._base import Section
from ._flags import FlagRouteConfig
from ._rollout import CanaryConfig, ShadowConfig

__all__ = ["CacheConfig", "HedgeConfig", "ModelConfig", "RetryConfig"]


class RetryConfig(Section):
    """Retries before the first response byte, bounded by a retry budget
    (``headway.guard.Retry``, ``RetryBudget``, ``ExponentialBackoff``)."""

    max_attempts: int = Field(default=3, ge=1)
    """Attempts per request including the first (SRE book ch. 21: 3)."""
    budget_percent: float = Field(default=20.0, ge=0, le=100)
    """Retries allowed as a percentage of requests (Finagle RetryBudget and Envoy: 20%)."""
    min_retries_per_second: float = Field(default=10.0, ge=0)
    """Retries always allowed regardless of traffic (Finagle minRetriesPerSec: 10)."""
    backoff_base: float = Field(default=0.025, gt=0)
    """First backoff in seconds, doubled each retry with full jitter (Envoy: 25 ms)."""
    backoff_cap: float = Field(default=0.25, gt=0)
    """Longest backoff in seconds (Envoy: 10x the base, 250 ms)."""

    @model_validator(mode="after")
    def _check_relations(self) -> Self:
        if self.backoff_base > self.backoff_cap:
            raise ValueError(
                f"backoff_base ({self.backoff_base:g}) must not exceed "
                f"backoff_cap ({self.backoff_cap:g})"
            )
        return self


class HedgeConfig(Section):
    """Send a second copy of a slow request to another endpoint (``headway.guard.Hedge``).
    Give either a fixed 'delay', or a latency 'percentile' (with 'min_delay' as floor)."""

    delay: float | None = Field(default=None, gt=0)
    """Fixed seconds before the hedge is sent."""
    percentile: float | None = Field(default=None, gt=0, lt=1)
    """Hedge after this percentile of recent latency ("The Tail at Scale": 0.95)."""
    min_delay: float = Field(default=0.1, gt=0)
    """Floor of a percentile delay, and the delay used until enough latencies are known."""

    @model_validator(mode="after")
    def _check_one_mode(self) -> Self:
        if (self.delay is None) == (self.percentile is None):
            raise ValueError("give exactly one of 'delay' or 'percentile'")
        return self


class CacheConfig(Section):
    """Exact-match response cache for deterministic requests (``headway.guard.Cache``)."""

    enabled: bool = False
    """Off by default: caching is a per-route decision."""
    ttl: float = Field(default=300.0, gt=0)
    """Seconds an answer is served from the cache."""
    max_entries: int = Field(default=10_000, ge=1)
    """Answers kept at most (least recently used go first)."""


class ModelConfig(Section):
    """A model name clients send, mapped to a pool and guarded per route."""

    name: str = Field(min_length=1)
    """Public model name (the 'model' field clients send, listed by GET /v1/models)."""
    pool: str
    """Name of the pool serving it."""
    upstream_model: str | None = Field(default=None, min_length=1)
    """Model name sent upstream in place of 'name' (default: 'name')."""
    retries: RetryConfig = RetryConfig()
    """Retries with a retry budget."""
    hedge: HedgeConfig | None = None
    """Hedging; null (the default) sends no hedges."""
    fallbacks: tuple[str, ...] = ()
    """Other model names tried in order when this one is shed, open or failing."""
    cache: CacheConfig = CacheConfig()
    """Response cache."""
    timeout: float | None = Field(default=None, gt=0)
    """Request deadline in seconds when the client sends none (default: server.default_timeout)."""
    canary: CanaryConfig | None = None
    """A weighted canary split to another pool; null (the default): all traffic on 'pool'."""
    shadow: ShadowConfig | None = None
    """Shadow traffic to a candidate pool, compared with the answers; null: none."""
    flag_route: FlagRouteConfig | None = None
    """Send requests to another configured model by a flag's variant; null: none."""

    @model_validator(mode="before")
    @classmethod
    def _default_upstream(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("upstream_model") is None and "name" in data:
            return {**data, "upstream_model": data["name"]}
        return data

    @property
    def upstream(self) -> str:
        """The model name sent upstream."""
        return self.upstream_model or self.name
