"""The gateway's metrics: RED per route/model/tenant/endpoint, LLM timings, guard metrics.

Each gateway owns a private :class:`~prometheus_client.CollectorRegistry` (never the global
one), so two gateways in one process, or a gateway and its tests, never mix numbers. Label
values for tenant, model and upstream endpoint pass through configured allow-lists (anything
else is ``"other"``), so no client can grow the number of series. Requests and upstream
attempts arrive in batches (one per event-loop turn, from the gateway's recorder) and are
tallied per series (``_tally``: in C when built: one dict lookup and a few additions per
request), then added into the series when a family is read (a scrape, the timeline); the numbers
are kept as Python ints and floats and turned into prometheus_client samples only when scraped
(``_families``).

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
on read for all models), accurate to 1% over the last minute, unlike histogram interpolation;
likewise upstream attempt latency per endpoint (one sketch ``add`` per attempt).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import pairwise
from typing import Any, ClassVar, NamedTuple

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.exposition import generate_latest

from headway.core import REAL_CLOCK, Clock

from ._buckets import INTER_TOKEN_BUCKETS, LLM_BUCKETS, TOKENS_PER_SECOND_BUCKETS
from ._collector import SnapshotCollector
from ._families import CounterFamily, CounterSeries, HistogramFamily, HistogramSeries
from ._guard_hooks import MetricsHooks
from ._labels import OTHER, AllowList
from ._outcome import Counted
from ._sketch import DDSketch
from ._tally import new_tally
from ._window import BATCH as SKETCH_BATCH
from ._window import DEFAULT_SLICES, DEFAULT_WINDOW, SlidingSketch

# A tally's add_requests or add_attempts: (batch, index, miss) -> the sketches to fold.
TallyAdd = Callable[[Any, dict[Any, int], Callable[..., int]], list[SlidingSketch]]

#: The gateway's API routes (the ``route`` label); anything else is "other".
ROUTES = ("chat", "completions", "embeddings")


class _Tokens:
    """A (model, tenant)'s token counters and its model's tokens/s histogram, bound on the first
    request that reports usage (a series that never saw tokens is not exported)."""

    def __init__(
        self, prompt: CounterSeries, completion: CounterSeries, per_second: HistogramSeries
    ) -> None:
        self.prompt = prompt
        self.completion = completion
        self.per_second = per_second


class _RequestSeries:
    """The series one label tuple's requests count in, and its slot in the requests tally:
    its counter, its (model, tenant) latency histogram, and its token series."""

    def __init__(
        self, slot: int, model: str, tenant: str, count: CounterSeries, duration: HistogramSeries
    ) -> None:
        self.slot = slot
        self.model = model
        self.tenant = tenant
        self.count = count
        self.duration = duration
        self.tokens: _Tokens | None = None


class _UpstreamSeries:
    def __init__(self, slot: int, count: CounterSeries, duration: HistogramSeries) -> None:
        self.slot = slot
        self.count = count
        self.duration = duration


def _add_histogram(series: HistogramSeries, counts: list[int], total: float) -> None:
    mine = series.counts
    for i, n in enumerate(counts):
        if n:
            mine[i] += n
    series.sum += total


class _Answered(NamedTuple):
    """:meth:`GatewayMetrics.request`'s arguments as a :class:`Counted`."""

    route: str
    model: str | None
    tenant: str | None
    status: int
    reason: str
    latency: float
    prompt: int | None
    completion: int | None
    generation: float


class GatewayMetrics:
    """All of one gateway's metrics in one private registry; ``render()`` for ``/metrics``."""

    content_type: ClassVar[str] = CONTENT_TYPE_LATEST

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
        self.requests = CounterFamily(
            f"{prefix}_requests",
            "Requests answered, by route, model, tenant, HTTP status and reason.",
            ["route", "model", "tenant", "status", "reason"],
            r,
        )
        self.duration = HistogramFamily(
            f"{prefix}_request_duration_seconds",
            "Time from request parsed to response complete (whole stream included).",
            ["model", "tenant"],
            r,
            buckets=buckets,
        )
        self.ttft = HistogramFamily(
            f"{prefix}_time_to_first_token_seconds",
            "Time from request parsed to the first byte of the upstream answer.",
            ["model"],
            r,
            buckets=buckets,
        )
        self.inter_token = HistogramFamily(
            f"{prefix}_inter_token_seconds",
            "Gap between consecutive chunks of a streamed answer.",
            ["model"],
            r,
            buckets=INTER_TOKEN_BUCKETS,
        )
        self.tokens_per_second = HistogramFamily(
            f"{prefix}_output_tokens_per_second",
            "Completion tokens per second of generation (first to last token when streamed).",
            ["model"],
            r,
            buckets=TOKENS_PER_SECOND_BUCKETS,
        )
        self.prompt_tokens = CounterFamily(
            f"{prefix}_prompt_tokens", "Prompt tokens.", ["model", "tenant"], r
        )
        self.completion_tokens = CounterFamily(
            f"{prefix}_completion_tokens", "Completion tokens.", ["model", "tenant"], r
        )
        self.upstream_requests = CounterFamily(
            f"{prefix}_upstream_requests",
            "Upstream attempts, by endpoint and HTTP status (0 = no response).",
            ["endpoint", "status"],
            r,
        )
        self.upstream_duration = HistogramFamily(
            f"{prefix}_upstream_duration_seconds",
            "Upstream attempt time to a complete response or to the first chunk of a stream.",
            ["endpoint"],
            r,
            buckets=buckets,
        )
        self.hooks = MetricsHooks(r, prefix=prefix)
        self.snapshots = SnapshotCollector(prefix=f"{prefix}_guard")
        r.register(self.snapshots)
        # Requests and attempts are tallied per series (see record_requests) and added to the
        # series when a family is read.
        # Latencies go straight into their sketch's pending values; a tally names the sketch
        # to fold when an append fills its batch.
        self._requests_tally = new_tally(
            self.duration.bounds,
            self.tokens_per_second.bounds,
            flush_at=SKETCH_BATCH,
            gap_bounds=self.inter_token.bounds,
        )
        self._attempts_tally = new_tally(self.upstream_duration.bounds, (), flush_at=SKETCH_BATCH)
        # Bound once: each drain passes these, and a bound method is made anew at every read.
        self._add_requests = self._requests_tally.add_requests
        self._add_attempts = self._attempts_tally.add_attempts
        self._request_miss: Callable[..., int] = self._request_slot
        self._upstream_miss: Callable[..., int] = self._upstream_slot
        for family in (
            self.requests,
            self.duration,
            self.tokens_per_second,
            self.ttft,
            self.inter_token,
            self.prompt_tokens,
            self.completion_tokens,
            self.upstream_requests,
            self.upstream_duration,
        ):
            family.before_read = self._catch_up
        self._request_children: dict[tuple[str, str, str, int, str], _RequestSeries] = {}
        self._request_slots: list[_RequestSeries] = []
        self._upstream_children: dict[tuple[str, int], _UpstreamSeries] = {}
        self._upstream_slots: list[_UpstreamSeries] = []
        self._sketches: dict[str, SlidingSketch] = {}
        self._endpoint_sketches: dict[str, SlidingSketch] = {}
        # The earliest moment a sketch's slice ends: sketches are rolled before a batch that
        # comes at or after it, so a batch's latencies land in the slice they belong to.
        self._roll_at = math.inf

    def set_allowed(
        self,
        *,
        models: Iterable[str] | None = None,
        tenants: Iterable[str] | None = None,
        endpoints: Iterable[str] | None = None,
    ) -> None:
        """Replace the allowed label values (on config reload); old series stay exported."""
        # The tallies' slots by raw (allowed) label values: one lookup per request. Raw values
        # that were allowed may not be any more.
        self._request_index: dict[tuple[str, str | None, str | None, int, str], int] = {}
        if models is not None:
            self._models = AllowList(models)
            self._model_map = self._models.mapping
        if tenants is not None:
            self._tenants = AllowList(tenants)
            self._tenant_map = self._tenants.mapping
        if endpoints is not None:
            self._endpoints = AllowList(endpoints)
            self._upstream_index: dict[tuple[str, int], int] = {}

    def _new_sketch(self) -> SlidingSketch:
        sketch = SlidingSketch(self._window[0], self._window[1], clock=self._clock)
        self._roll_at = min(self._roll_at, sketch.roll(self._clock.now()))
        return sketch

    def _all_sketches(self) -> Iterator[SlidingSketch]:
        yield from self._sketches.values()
        yield from self._endpoint_sketches.values()

    def _roll(self, now: float) -> None:
        """Every sketch whose slice ended by ``now`` folds and starts the current one."""
        self._roll_at = min((sketch.roll(now) for sketch in self._all_sketches()), default=math.inf)

    # -- the data path ---------------------------------------------------------------------

    def request(
        self,
        route: str,
        model: str | None,
        tenant: str | None,
        status: int,
        reason: str,
        seconds: float,
        prompt: int | None = None,
        completion: int | None = None,
        generation: float | None = None,
    ) -> None:
        """One answered request (call once, when its response, or stream, is complete), with
        its token usage when known; ``generation`` is the decode time tokens/s divides by
        (default ``seconds``: a whole answer's tokens arrive with its body)."""
        self.record_requests(
            (
                _Answered(
                    route,
                    model,
                    tenant,
                    status,
                    reason,
                    seconds,
                    prompt,
                    completion,
                    seconds if generation is None else generation,
                ),
            )
        )

    def record_requests(self, outcomes: Sequence[Counted]) -> None:
        """Many answered requests at once (the gateway records them in batches), tallied
        per series (``_tally``: in C when built) and added to the series when they are read;
        latencies go to their model's sketch now."""
        self.record(outcomes, ())

    def record(
        self, outcomes: Sequence[Counted], attempts: Sequence[tuple[str, int, float]]
    ) -> None:
        """A batch of answered requests and upstream attempts at once (the gateway's drain),
        with one clock read: the sketches roll first if a slice ended (so the batch's latencies
        land in the slice they belong to), then each batch goes into its tally."""
        now = self._clock.now()
        if now >= self._roll_at:
            self._roll(now)
        if attempts:
            self._add(self._add_attempts, attempts, self._upstream_index, self._upstream_miss)
        if outcomes:
            self._add(self._add_requests, outcomes, self._request_index, self._request_miss)

    def _add(
        self,
        add: TallyAdd,
        batch: Sequence[Any],
        index: dict[Any, int],
        miss: Callable[..., int],
    ) -> None:
        """The batch into its tally; each sketch the tally names as full folds, and after a
        batch cut short, every full sketch."""
        try:
            full = add(batch, index, miss)
        except BaseException:
            for sketch in self._all_sketches():
                if len(sketch.pending) >= SKETCH_BATCH:
                    sketch.fold()
            raise
        for sketch in full:
            sketch.fold()

    def _request_slot(
        self, route: str, model: str | None, tenant: str | None, status: int, reason: str
    ) -> int:
        """The tally slot of a request's raw labels, the first time they are seen. Raw label
        tuples are remembered only when every value is an allowed one (bounded, like the
        series); a request with an unknown model pays the mapping on every call instead."""
        key = (
            self._route_map.get(route, OTHER),
            self._model_map.get(model, OTHER),
            self._tenant_map.get(tenant, OTHER),
            status,
            reason,
        )
        series = self._request_children.get(key)
        if series is None:
            series = self._bind_request(key)
        if key[0] == route and key[1] == model and key[2] == tenant:
            self._request_index[(route, model, tenant, status, reason)] = series.slot
        return series.slot

    def _bind_request(self, key: tuple[str, str, str, int, str]) -> _RequestSeries:
        route, model, tenant, status, reason = key
        sketch = self._sketches.get(model)
        if sketch is None:
            sketch = self._sketches[model] = self._new_sketch()
        slot = len(self._request_slots)
        series = self._request_children[key] = _RequestSeries(
            slot,
            model,
            tenant,
            self.requests.series((route, model, tenant, str(status), reason)),
            self.duration.series((model, tenant)),
        )
        self._request_slots.append(series)
        self._requests_tally.bind(slot, sketch.pending, sketch)
        return series

    def _catch_up(self) -> None:
        """Add what the tallies hold into the series (before any family is read)."""
        slots = self._request_slots
        for taken in self._requests_tally.take():
            at, count, total, buckets, seen, prompt, completion, tps_sum, tps = taken[:9]
            series = slots[at]
            series.count.value += count
            _add_histogram(series.duration, buckets, total)
            if seen:
                tokens = series.tokens
                if tokens is None:
                    tokens = series.tokens = self._bind_tokens(series.model, series.tenant)
                tokens.prompt.value += prompt
                tokens.completion.value += completion
                _add_histogram(tokens.per_second, tps, tps_sum)
            streamed, ttft_sum, ttft, gap_sum, gaps = taken[9:]
            if streamed:
                label = (series.model,)
                _add_histogram(self.ttft.series(label), ttft, ttft_sum)
                _add_histogram(self.inter_token.series(label), gaps, gap_sum)
        upstream = self._upstream_slots
        for at, count, total, buckets, *_ in self._attempts_tally.take():
            attempt = upstream[at]
            attempt.count.value += count
            _add_histogram(attempt.duration, buckets, total)

    def _bind_tokens(self, model: str, tenant: str) -> _Tokens:
        return _Tokens(
            self.prompt_tokens.series((model, tenant)),
            self.completion_tokens.series((model, tenant)),
            self.tokens_per_second.series((model,)),
        )

    def first_token(self, model: str | None, seconds: float) -> None:
        self.ttft.series((self._models(model),)).observe(seconds)

    def chunk_gap(self, model: str | None, seconds: float) -> None:
        self.inter_token.series((self._models(model),)).observe(seconds)

    def tokens(
        self, model: str | None, tenant: str | None, prompt: int, completion: int, seconds: float
    ) -> None:
        """Token usage of one request alone (``request`` takes it too, in the same call);
        ``seconds`` is its generation time (for tokens/s)."""
        tokens = self._bind_tokens(self._models(model), self._tenants(tenant))
        if prompt > 0:
            tokens.prompt.value += prompt
        if completion > 0:
            tokens.completion.value += completion
            if seconds > 0:
                tokens.per_second.observe(completion / seconds)

    def upstream(self, endpoint: str, status: int, seconds: float) -> None:
        """One upstream attempt (status 0 when there was no HTTP response)."""
        self.record_attempts(((endpoint, status, seconds),))

    def record_attempts(self, attempts: Sequence[tuple[str, int, float]]) -> None:
        """Many upstream attempts at once, each ``(endpoint, status, seconds)`` (the gateway
        records them in batches), tallied like requests (see ``record_requests``)."""
        self.record((), attempts)

    def _upstream_slot(self, endpoint: str, status: int) -> int:
        """The tally slot of an attempt's endpoint and status, the first time they are seen.
        Attempts are keyed by the raw endpoint name: names come from the configuration
        (bounded), and a reload forgets them so a removed name maps to "other"."""
        label = self._endpoints(endpoint)
        series = self._upstream_children.get((label, status))
        if series is None:
            sketch = self._endpoint_sketches.get(label)
            if sketch is None:
                sketch = self._endpoint_sketches[label] = self._new_sketch()
            series = self._upstream_children[(label, status)] = _UpstreamSeries(
                len(self._upstream_slots),
                self.upstream_requests.series((label, str(status))),
                self.upstream_duration.series((label,)),
            )
            self._upstream_slots.append(series)
            self._attempts_tally.bind(series.slot, sketch.pending, sketch)
        self._upstream_index[(endpoint, status)] = series.slot
        return series.slot

    def stream_gaps(self, model: str | None, stamps: list[float]) -> None:
        """The gaps between consecutive ``stamps`` (a long stream's chunk arrivals so far)
        into its model's inter-token histogram now, instead of with its outcome."""
        _observe_gaps(self.inter_token.series((self._models(model),)), stamps)

    def stream(self, model: str | None, started: float) -> StreamTimer:
        """Timing for one streamed answer that began (request parsed) at ``started``, for
        callers outside the gateway (whose relay hands its chunk times to the recorder)."""
        label = (self._models(model),)
        return StreamTimer(
            self._clock, started, self.ttft.series(label), self.inter_token.series(label)
        )

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

    def endpoint_latency_quantiles(
        self, endpoint: str, qs: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999)
    ) -> list[float]:
        """Upstream attempt latency quantiles of one ``pool/endpoint`` over the sliding window
        (NaN when it had no attempts there), for the admin API."""
        found = self._endpoint_sketches.get(self._endpoints(endpoint))
        return found.quantiles(qs) if found is not None else [math.nan] * len(qs)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric in this gateway's registry."""
        return generate_latest(self.registry)


class StreamTimer:
    """Per-stream TTFT and chunk gaps: the first chunk observes TTFT at once, the others only
    note when they came, and :meth:`done` puts every gap into the histogram in one pass."""

    def __init__(
        self, clock: Clock, started: float, ttft: HistogramSeries, gap: HistogramSeries
    ) -> None:
        self._clock = clock
        self._ttft = ttft
        self._gap = gap
        self.started = started
        #: When each chunk arrived, on the clock's scale.
        self.stamps: list[float] = []
        self._recorded = 1  # the first stamp whose gap to the one before is not counted

    def chunk(self) -> None:
        """A chunk arrived now."""
        stamps = self.stamps
        stamps.append(self._clock.now())
        if len(stamps) == 1:
            self._ttft.observe(stamps[0] - self.started)

    def done(self) -> float:
        """Put the gaps between the chunks seen so far into the histogram (each gap once, even
        if called again); returns the decode time (:attr:`generation_seconds`)."""
        stamps = self.stamps
        after = self._recorded
        if len(stamps) > after:
            _observe_gaps(self._gap, stamps if after == 1 else stamps[after - 1 :])
            self._recorded = len(stamps)
        return self.generation_seconds

    @property
    def first(self) -> float | None:
        return self.stamps[0] if self.stamps else None

    @property
    def ttft(self) -> float | None:
        return self.stamps[0] - self.started if self.stamps else None

    @property
    def generation_seconds(self) -> float:
        """First to last chunk: the decode time that output tokens per second divides by."""
        stamps = self.stamps
        return stamps[-1] - stamps[0] if stamps else 0.0


def _observe_gaps(series: HistogramSeries, stamps: list[float]) -> None:
    """Each gap between consecutive ``stamps`` into ``series``."""
    series.sum += _add_gaps(series.counts, series.bounds, stamps)


def _python_add_gaps(counts: list[int], bounds: tuple[float, ...], stamps: list[float]) -> float:
    """The reference loop of ``_speedups.add_gaps``: each gap between consecutive stamps into
    its bucket; returns their sum."""
    total = 0.0
    for before, after in pairwise(stamps):
        gap = after - before
        counts[bisect_left(bounds, gap)] += 1
        total += gap
    return total


_add_gaps: Callable[[list[int], tuple[float, ...], list[float]], float]
try:  # built from _speedups.c at install when a C compiler is there (see setup.py)
    from ._speedups import add_gaps as _add_gaps
except ImportError:  # pragma: no cover - the pure-Python loop runs
    _add_gaps = _python_add_gaps
