"""The gateway's metrics: RED per route/model/tenant/endpoint, LLM timings, guard metrics.

Each gateway owns a private :class:`~prometheus_client.CollectorRegistry` (never the global
one), so two gateways in one process, or a gateway and its tests, never mix numbers. Label
values for tenant, model and upstream endpoint pass through configured allow-lists (anything
else is ``"other"``), so no client can grow the number of series. The data path pays one dict
lookup for pre-bound label children, then the prometheus_client ``inc``/``observe`` calls.

Metrics (prefix ``headway_``)::

    requests_total{route,model,tenant,status,reason}       counter  every answered request
    request_duration_seconds{model,tenant}                  histogram  LLM_BUCKETS
    time_to_first_token_seconds{model}                      histogram  LLM_BUCKETS
    inter_token_seconds{model}                              histogram  gap between stream chunks
    output_tokens_per_second{model}                         histogram
    prompt_tokens_total{model,tenant}, completion_tokens_total{model,tenant}   counters
    upstream_requests_total{endpoint,status}, upstream_duration_seconds{endpoint}
    + guard metrics from :class:`MetricsHooks` (pushed) and :class:`SnapshotCollector` (pulled)

Latency quantiles for the admin API come from a :class:`SlidingSketch` per model label (merged
on read for all models), accurate to 1% over the last minute, unlike histogram interpolation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from headway.core import REAL_CLOCK, Clock

from ._buckets import INTER_TOKEN_BUCKETS, LLM_BUCKETS, TOKENS_PER_SECOND_BUCKETS
from ._collector import SnapshotCollector
from ._guard_hooks import MetricsHooks
from ._labels import OTHER, AllowList
from ._sketch import DDSketch
from ._window import DEFAULT_SLICES, DEFAULT_WINDOW, SlidingSketch

#: The gateway's API routes (the ``route`` label); anything else is "other".
ROUTES = ("chat", "completions", "embeddings")

_Request = tuple[Counter, Histogram, SlidingSketch]


class GatewayMetrics:
    """All of one gateway's metrics in one private registry; ``render()`` for ``/metrics``."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        buckets: Iterable[float] = LLM_BUCKETS,
        models: Iterable[str] = (),
        tenants: Iterable[str] = (),
        endpoints: Iterable[str] = (),
        routes: Iterable[str] = ROUTES,
        window_seconds: float = DEFAULT_WINDOW,
        window_slices: int = DEFAULT_SLICES,
        clock: Clock = REAL_CLOCK,
        prefix: str = "headway",
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._clock = clock
        self._window = (window_seconds, window_slices)
        self._route_map = AllowList(routes).mapping
        self.set_allowed(models=models, tenants=tenants, endpoints=endpoints)
        buckets = tuple(buckets)
        r = self.registry
        self.requests = Counter(
            f"{prefix}_requests",
            "Requests answered, by route, model, tenant, HTTP status and reason.",
            ["route", "model", "tenant", "status", "reason"],
            registry=r,
        )
        self.duration = Histogram(
            f"{prefix}_request_duration_seconds",
            "Time from request parsed to response complete (whole stream included).",
            ["model", "tenant"],
            buckets=buckets,
            registry=r,
        )
        self.ttft = Histogram(
            f"{prefix}_time_to_first_token_seconds",
            "Time from request parsed to the first byte of the upstream answer.",
            ["model"],
            buckets=buckets,
            registry=r,
        )
        self.inter_token = Histogram(
            f"{prefix}_inter_token_seconds",
            "Gap between consecutive chunks of a streamed answer.",
            ["model"],
            buckets=INTER_TOKEN_BUCKETS,
            registry=r,
        )
        self.tokens_per_second = Histogram(
            f"{prefix}_output_tokens_per_second",
            "Completion tokens per second of generation (first to last token when streamed).",
            ["model"],
            buckets=TOKENS_PER_SECOND_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(
            f"{prefix}_prompt_tokens", "Prompt tokens.", ["model", "tenant"], registry=r
        )
        self.completion_tokens = Counter(
            f"{prefix}_completion_tokens", "Completion tokens.", ["model", "tenant"], registry=r
        )
        self.upstream_requests = Counter(
            f"{prefix}_upstream_requests",
            "Upstream attempts, by endpoint and HTTP status (0 = no response).",
            ["endpoint", "status"],
            registry=r,
        )
        self.upstream_duration = Histogram(
            f"{prefix}_upstream_duration_seconds",
            "Upstream attempt time to a complete response or to the first chunk of a stream.",
            ["endpoint"],
            buckets=buckets,
            registry=r,
        )
        self.hooks = MetricsHooks(r, prefix=prefix)
        self.snapshots = SnapshotCollector(prefix=f"{prefix}_guard")
        r.register(self.snapshots)
        self._request_children: dict[tuple[str, str, str, int, str], _Request] = {}
        self._model_children: dict[str, tuple[Histogram, Histogram, Histogram]] = {}
        self._token_children: dict[tuple[str, str], tuple[Counter, Counter]] = {}
        self._upstream_children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
        self._sketches: dict[str, SlidingSketch] = {}

    def set_allowed(
        self,
        *,
        models: Iterable[str] | None = None,
        tenants: Iterable[str] | None = None,
        endpoints: Iterable[str] | None = None,
    ) -> None:
        """Replace the allowed label values (on config reload); old series stay exported."""
        if models is not None:
            self._models = AllowList(models)
            self._model_map = self._models.mapping
        if tenants is not None:
            self._tenants = AllowList(tenants)
            self._tenant_map = self._tenants.mapping
        if endpoints is not None:
            self._endpoints = AllowList(endpoints)

    def _new_sketch(self) -> SlidingSketch:
        return SlidingSketch(self._window[0], self._window[1], clock=self._clock)

    # -- the data path ---------------------------------------------------------------------

    def request(
        self,
        route: str,
        model: str | None,
        tenant: str | None,
        status: int,
        reason: str,
        seconds: float,
    ) -> None:
        """One answered request (call once, when its response, or stream, is complete)."""
        key = (
            self._route_map.get(route, OTHER),
            self._model_map.get(model, OTHER),
            self._tenant_map.get(tenant, OTHER),
            status,
            reason,
        )
        children = self._request_children.get(key)
        if children is None:
            children = self._bind_request(key)
        counter, histogram, sketch = children
        counter.inc()
        histogram.observe(seconds)
        sketch.add(seconds)

    def _bind_request(self, key: tuple[str, str, str, int, str]) -> _Request:
        route, model, tenant, status, reason = key
        sketch = self._sketches.get(model)
        if sketch is None:
            sketch = self._sketches[model] = self._new_sketch()
        children = (
            self.requests.labels(route, model, tenant, str(status), reason),
            self.duration.labels(model, tenant),
            sketch,
        )
        self._request_children[key] = children
        return children

    def _model(self, model: str | None) -> tuple[Histogram, Histogram, Histogram]:
        label = self._models(model)
        children = self._model_children.get(label)
        if children is None:
            children = self._model_children[label] = (
                self.ttft.labels(label),
                self.inter_token.labels(label),
                self.tokens_per_second.labels(label),
            )
        return children

    def first_token(self, model: str | None, seconds: float) -> None:
        self._model(model)[0].observe(seconds)

    def chunk_gap(self, model: str | None, seconds: float) -> None:
        self._model(model)[1].observe(seconds)

    def tokens(
        self, model: str | None, tenant: str | None, prompt: int, completion: int, seconds: float
    ) -> None:
        """Token usage of one request; ``seconds`` is its generation time (for tokens/s)."""
        key = (self._models(model), self._tenants(tenant))
        children = self._token_children.get(key)
        if children is None:
            children = self._token_children[key] = (
                self.prompt_tokens.labels(*key),
                self.completion_tokens.labels(*key),
            )
        if prompt > 0:
            children[0].inc(prompt)
        if completion > 0:
            children[1].inc(completion)
            if seconds > 0:
                self._model(model)[2].observe(completion / seconds)

    def upstream(self, endpoint: str, status: int, seconds: float) -> None:
        """One upstream attempt (status 0 when there was no HTTP response)."""
        key = (self._endpoints(endpoint), status)
        children = self._upstream_children.get(key)
        if children is None:
            children = self._upstream_children[key] = (
                self.upstream_requests.labels(key[0], str(status)),
                self.upstream_duration.labels(key[0]),
            )
        children[0].inc()
        children[1].observe(seconds)

    def stream(self, model: str | None, started: float) -> StreamTimer:
        """Timing for one streamed answer that began (request parsed) at ``started``."""
        ttft, gap, _ = self._model(model)
        return StreamTimer(self._clock, started, ttft, gap)

    # -- reading -----------------------------------------------------------------------------

    def latency_quantiles(
        self, model: str | None = None, qs: tuple[float, ...] = (0.5, 0.99, 0.999)
    ) -> list[float]:
        """Request latency quantiles over the sliding window (NaN when there were none);
        ``model=None`` for all models, else the model's label (unknown models are "other")."""
        if model is None:  # sketches merge exactly, so "all models" costs nothing per request
            merged = DDSketch()
            for sketch in self._sketches.values():
                merged.merge(sketch.merged())
            return merged.quantiles(qs)
        found = self._sketches.get(self._models(model))
        return found.quantiles(qs) if found is not None else [math.nan] * len(qs)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric in this gateway's registry."""
        return generate_latest(self.registry)


class StreamTimer:
    """Per-stream TTFT and chunk gaps; one clock read and one observe per chunk."""

    __slots__ = ("_clock", "_gap", "_last", "_ttft", "first", "started")

    def __init__(self, clock: Clock, started: float, ttft: Histogram, gap: Histogram) -> None:
        self._clock = clock
        self._ttft = ttft
        self._gap = gap
        self.started = started
        self.first: float | None = None
        self._last = started

    def chunk(self) -> None:
        now = self._clock.now()
        if self.first is None:
            self.first = now
            self._ttft.observe(now - self.started)
        else:
            self._gap.observe(now - self._last)
        self._last = now

    @property
    def ttft(self) -> float | None:
        return None if self.first is None else self.first - self.started

    @property
    def generation_seconds(self) -> float:
        """First to last chunk: the decode time that output tokens per second divides by."""
        return 0.0 if self.first is None else self._last - self.first
