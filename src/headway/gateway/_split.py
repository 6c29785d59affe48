"""Canary traffic splits: one public model served by a stable and a canary route, by weight.

Each request goes to one side, chosen in this order:

1. the override header (``x-headway-canary: always|never``), so testers reach a side directly;
2. the sticky key (tenant, the OpenAI ``user`` field, or a header such as a conversation id;
   the tenant when the request has none) hashed into ``[0, 10000)`` with the model name as
   salt; buckets below ``weight * 100`` are the canary's. The range grows from bucket 0, so at a
   fixed weight a key always lands on the same side and raising the weight only moves keys from
   stable to canary (``headway.rollout.bucket``).

The canary route is a second :class:`ModelRoute` on the canary pool with the model's hedge and
cache settings, and one attempt per request while failures fall back to stable (so the analysis
sees the canary's real failure rate; its retries would hide most of it). When a canary
request fails before its first byte, it is served on the stable route instead, if a retry
budget of the model's ``retries.budget_percent`` of canary requests allows (Finagle's
RetryBudget): the canary's
failures reach clients only when the budget is spent, so a bad canary's blast radius stays
small while the failure is still counted against the canary. While no canary endpoint is
available at all (every one ejected or behind an open breaker) canary requests go straight to
stable: an attempt would only wait out the breaker.

The weight changes at run time without a reload: pushed with :meth:`TrafficSplit.set_weight`,
or pulled on every request from a controller's ``current_weight()`` (:meth:`TrafficSplit.follow`).
A reload that leaves the ``canary`` section as it was keeps the live weight, the followed source
and the sample windows. Each side counts its requests and errors and samples latency and time to
first byte; :meth:`TrafficSplit.window` hands the analysis both sides over the same span.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from headway.config import CanaryConfig, ModelConfig
from headway.core import REAL_CLOCK, Clock, Context, Rejected, UpstreamError, annotate
from headway.core import current_context as _current_context
from headway.guard import RetryBudget
from headway.rollout import (
    BUCKETS,
    DEFAULT_SAMPLE_CAPACITY,
    SideRecorder,
    SplitWindow,
    bucket,
    percent_to_buckets,
)

from ._errors import BadRequest
from ._routes import ModelRoute, ProxyCall
from ._upstreams import Header, Reply, StreamReply

__all__ = [
    "CANARY",
    "STABLE",
    "VARIANT_ATTRIBUTE",
    "VARIANT_HEADER",
    "Side",
    "TrafficSplit",
    "WeightSource",
    "build_splits",
    "carry_over",
]

STABLE = "stable"
CANARY = "canary"
#: The request context attribute naming the side that served the request.
VARIANT_ATTRIBUTE = "variant"
#: The response header naming the side that served the request.
VARIANT_HEADER = b"x-headway-variant"
_HEADERS = {
    STABLE: ((VARIANT_HEADER, STABLE.encode()),),
    CANARY: ((VARIANT_HEADER, CANARY.encode()),),
}
_ALWAYS = b"always"
_NEVER = b"never"


class WeightSource(Protocol):
    """Where a split may read its weight on each request (``RolloutController`` is one)."""

    def current_weight(self) -> float: ...


class Side:
    """One side of a split: serves a request on its route and records how it went."""

    __slots__ = ("_split", "name")

    def __init__(self, split: TrafficSplit, name: str) -> None:
        self._split = split
        self.name = name

    def service(self, call: ProxyCall) -> Awaitable[Reply | StreamReply]:
        return self._split._serve(self.name, call)

    def headers(self, ctx: Context) -> tuple[Header, ...]:
        """The ``x-headway-variant`` header of the side that actually served ``ctx``'s request
        (stable, when a failed canary attempt was served there)."""
        return _HEADERS[ctx.attributes.get(VARIANT_ATTRIBUTE, self.name)]


class TrafficSplit:
    """A model's stable/canary split; the handle a canary controller drives."""

    kind = "split"

    def __init__(
        self,
        model: ModelConfig,
        stable: ModelRoute,
        canary: ModelRoute,
        *,
        clock: Clock = REAL_CLOCK,
        rng: random.Random | None = None,
        sample_capacity: int = DEFAULT_SAMPLE_CAPACITY,
    ) -> None:
        assert model.canary is not None
        config: CanaryConfig = model.canary
        self.name = model.name
        self.config = config
        self.canary_pool = config.pool
        self.stable_route = stable
        self.canary_route = canary
        self._clock = clock
        self._override = config.override_header.encode()
        self._sticky = config.sticky
        self._sticky_header = (
            config.sticky[len("header:") :].encode() if config.sticky.startswith("header:") else b""
        )
        self._fallback = config.fallback_to_stable
        r = model.retries
        self._budget = RetryBudget(
            r.budget_percent / 100.0, min_retries_per_second=r.min_retries_per_second, clock=clock
        )
        #: The weight the config asked for; the live weight starts there.
        self.config_weight = config.weight
        self._weight = config.weight
        self._buckets = percent_to_buckets(config.weight)
        self._source: WeightSource | None = None
        rng = rng if rng is not None else random.Random()
        self._recorders = {
            STABLE: SideRecorder(sample_capacity, rng=rng),
            CANARY: SideRecorder(sample_capacity, rng=rng),
        }
        self._window_start = clock.now()
        self.fallbacks = 0
        #: Canary requests served on stable because no canary endpoint was available.
        self.unavailable = 0
        self.stable = Side(self, STABLE)
        self.canary = Side(self, CANARY)

    # -- what a canary controller drives ---------------------------------------------------------

    @property
    def weight(self) -> float:
        """Percent of sticky keys served by the canary (0..100)."""
        source = self._source
        return self._weight if source is None else float(source.current_weight())

    def follow(self, source: WeightSource | None) -> None:
        """Read the weight from ``source.current_weight()`` on every request (a rollout
        controller: an abort then takes effect on the very next request); None goes back to
        the weight last set with :meth:`set_weight`."""
        self._source = source

    def set_weight(self, percent: float) -> None:
        """Serve ``percent`` (0..100, 0.01 resolution) on the canary from the next request on."""
        if isinstance(percent, bool) or not isinstance(percent, int | float):
            raise TypeError(f"weight must be a number, got {percent!r}")
        if not math.isfinite(percent):
            raise ValueError(f"weight must be within 0..100, got {percent!r}")
        self._buckets = percent_to_buckets(percent)  # raises ValueError outside 0..100
        self._weight = float(percent)

    def window(self) -> SplitWindow:
        """Both sides' counts and samples since the previous call (or the start), over the same
        span; the next window starts now."""
        now = self._clock.now()
        window = SplitWindow(
            start=self._window_start,
            end=now,
            weight=self.weight,
            stable=self._recorders[STABLE].drain(),
            canary=self._recorders[CANARY].drain(),
        )
        self._window_start = now
        return window

    #: Another name for :meth:`window`.
    drain_samples = window

    def snapshot(self) -> dict[str, Any]:
        stable, canary = self._recorders[STABLE], self._recorders[CANARY]
        return {
            "model": self.name,
            "canary_pool": self.canary_pool,
            "weight": self.weight,
            "following": self._source is not None,
            "config_weight": self.config_weight,
            "sticky": self._sticky,
            "requests": {STABLE: stable.requests_total, CANARY: canary.requests_total},
            "errors": {STABLE: stable.errors_total, CANARY: canary.errors_total},
            "fallbacks": self.fallbacks,
            "fallbacks_refused": self._budget.refused,
            "canary_unavailable": self.unavailable,
        }

    def adopt(self, previous: TrafficSplit) -> None:
        """Continue ``previous`` (the same model on the runtime being replaced): keep its live
        weight and sample windows when the canary section did not change, so a reload neither
        undoes a controller's step nor loses a window's samples."""
        if previous.config != self.config:
            return
        self.set_weight(previous._weight)
        self._source = previous._source
        self._recorders = previous._recorders
        self._window_start = previous._window_start
        self.fallbacks = previous.fallbacks
        self.unavailable = previous.unavailable

    # -- the request path ------------------------------------------------------------------------

    def choose(self, headers: Mapping[bytes, bytes], tenant: str, user: str | None) -> Side:
        """The side that serves a request (400 on an override value other than always/never)."""
        forced = headers.get(self._override)
        if forced is not None:
            value = forced.strip().lower()
            if value == _ALWAYS:
                return self.canary
            if value == _NEVER:
                return self.stable
            raise BadRequest(
                f"header {self.config.override_header}: expected 'always' or 'never', "
                f"got {forced.decode('latin-1')!r}",
                code="invalid_canary_override",
            )
        source = self._source
        buckets = self._buckets if source is None else _buckets_of(source)
        if buckets <= 0:
            return self.stable
        if buckets >= BUCKETS:
            return self.canary
        key = self._key(headers, tenant, user)
        return self.canary if bucket(self.name, key) < buckets else self.stable

    def _key(self, headers: Mapping[bytes, bytes], tenant: str, user: str | None) -> str:
        if self._sticky == "user" and user:
            return "user:" + user
        if self._sticky_header:
            value = headers.get(self._sticky_header)
            if value:
                return "header:" + value.decode("latin-1")
        return "tenant:" + tenant

    async def _serve(self, side: str, call: ProxyCall) -> Reply | StreamReply:
        attributes = _current_context().attributes
        attributes[VARIANT_ATTRIBUTE] = side
        route = self.canary_route if side == CANARY else self.stable_route
        recorder = self._recorders[side]
        clock = self._clock
        if side == CANARY:
            if self._fallback and not self.canary_route.pool.balancer.healthy_count:
                # Every canary endpoint is ejected or its breaker open: an attempt would only
                # wait out the breaker (the retry honours its Retry-After), so go to stable.
                self.unavailable += 1
                attributes[VARIANT_ATTRIBUTE] = STABLE
                annotate("fallback", "canary_unavailable")
                return await self.stable_route.service(call)
            self._budget.deposit()
        start = clock.now()
        try:
            reply = await route.service(call)
        except (Rejected, UpstreamError):
            recorder.finished(clock.now() - start, error=True)
            if side == CANARY and self._fallback and self._budget.try_withdraw():
                # Served on stable, counted against the canary; not a stable sample.
                self.fallbacks += 1
                attributes[VARIANT_ATTRIBUTE] = STABLE
                annotate("fallback", "canary_failed")
                return await self.stable_route.service(call)
            raise
        except Exception:
            recorder.finished(clock.now() - start, error=True)
            raise
        latency = clock.now() - start
        if isinstance(reply, Reply):
            # A whole answer's first byte is its last: its TTFT is its latency.
            recorder.first_byte(latency)
            recorder.finished(latency, error=reply.status >= 400)
            return reply
        recorder.first_byte(latency)
        return _recorded_stream(reply, recorder, start, clock)


def _buckets_of(source: WeightSource) -> int:
    """The source's weight in buckets; a weight outside 0..100 is clamped, never raised on the
    request path."""
    percent = source.current_weight()
    return percent_to_buckets(min(100.0, max(0.0, float(percent))))


def _recorded_stream(
    reply: StreamReply, recorder: SideRecorder, start: float, clock: Clock
) -> StreamReply:
    """``reply``, whose outcome is also recorded on the side when the stream ends."""
    inner = reply.finish

    def finish(error: BaseException | None, cancelled: bool) -> None:
        inner(error, cancelled=cancelled)
        if cancelled:  # the client left: neither a failure nor a latency of the side
            recorder.finished(None, error=False)
        else:
            recorder.finished(clock.now() - start, error=error is not None)

    return StreamReply(reply.response, reply.first, reply.endpoint, finish)


def build_splits(
    models: list[ModelConfig] | tuple[ModelConfig, ...],
    routes: Mapping[str, ModelRoute],
    make_route: Callable[[ModelConfig], ModelRoute],
    *,
    clock: Clock = REAL_CLOCK,
) -> dict[str, TrafficSplit]:
    """A split for each model with a ``canary`` section; ``make_route(config)`` builds the
    canary's route from the model config rewritten for the canary pool."""
    splits: dict[str, TrafficSplit] = {}
    for model in models:
        canary = model.canary
        if canary is None:
            continue
        update: dict[str, object] = {
            "pool": canary.pool,
            "upstream_model": canary.upstream_model or model.upstream,
            "fallbacks": (),  # a failed canary request goes to stable, see TrafficSplit
            "canary": None,
            "shadow": None,
        }
        if canary.fallback_to_stable:
            # One attempt on the canary: its failures then reach the analysis as they are (with
            # three attempts a 20%-error canary would look like a 0.8% one) while the client's
            # retry happens on stable instead, within the split's budget.
            update["retries"] = model.retries.model_copy(update={"max_attempts": 1})
        canary_config = model.model_copy(update=update)
        splits[model.name] = TrafficSplit(
            model, routes[model.name], make_route(canary_config), clock=clock
        )
    return splits


def carry_over(splits: Mapping[str, TrafficSplit], previous: Mapping[str, TrafficSplit]) -> None:
    """Let each new split continue the old runtime's split of the same model."""
    for name, split in splits.items():
        old = previous.get(name)
        if old is not None:
            split.adopt(old)
