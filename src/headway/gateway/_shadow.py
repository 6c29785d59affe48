"""Shadow traffic: mirror a sample of a model's answered requests to a candidate pool, compare.

The primary request is never delayed or failed by its shadow: the mirror is decided only after
the primary's answer is back (the client gets it on the same tick), runs as a fire-and-forget
task in a fresh request context (its own deadline, no share in the client's decision trail), and
every failure of the mirror is counted, never raised. The cost is bounded three ways because
mirrored inference spends real capacity: a sampled share of requests, a GCRA cap on mirrors per
minute, and a bound on mirrors in flight (over it, a mirror is skipped, never queued).

Only whole (non-streamed) answers are mirrored: comparing needs the whole primary answer, and
buffering a client's stream would put a copy of every chunk on the hot path. Streamed requests
are counted as skipped.

As in Twitter's Diffy, a mirrored request may also go to a second copy of the stable pool (the
noise pool): primary vs noise differences are the noise floor of a non-deterministic model, and
the candidate's diff rate is reported relative to it (``headway.rollout.compare``). Tasks are
tracked so closing the runtime cancels the mirrors still in flight.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
from collections.abc import Awaitable, Callable
from typing import Any

from headway.config import ModelConfig, ShadowConfig
from headway.core import REAL_CLOCK, Clock, Context, Priority, current_context, set_context
from headway.guard import RateLimiter
from headway.rollout import DiffCounters, Observed, Tolerances, compare, relative_rates

from ._errors import UpstreamHttpError
from ._openai import rewrite_model
from ._routes import ModelRoute, ProxyCall
from ._upstreams import Header, Pool, Reply, StreamReply

__all__ = ["SKIP_REASONS", "ShadowMirror", "build_shadows"]

Serve = Callable[[ProxyCall], Awaitable[Reply | StreamReply]]

#: Why a request was not mirrored.
SKIP_REASONS = ("stream", "sample", "primary_failed", "fallback", "rate", "concurrency")
_PATHS = {
    "chat": b"/chat/completions",
    "completions": b"/completions",
    "embeddings": b"/embeddings",
}
# Mirrors carry no client headers (not the trace context: a mirror is not part of the client's
# trace), and say what they are, like Envoy's "-shadow" host suffix.
_MIRROR_HEADERS: list[Header] = [
    (b"content-type", b"application/json"),
    (b"x-headway-shadow", b"1"),
]


class ShadowMirror:
    """One model's shadow traffic: the sampling, the caps, the mirrors and their diff counts."""

    kind = "shadow"

    def __init__(
        self,
        model: ModelConfig,
        candidate: Pool,
        noise: Pool | None,
        *,
        clock: Clock = REAL_CLOCK,
        rng: random.Random | None = None,
    ) -> None:
        assert model.shadow is not None
        config: ShadowConfig = model.shadow
        self.name = model.name
        self.config = config
        self._candidate = candidate
        self._noise = noise
        self._upstream = model.upstream
        self._candidate_upstream = config.upstream_model or model.upstream
        self._clock = clock
        self._rng = rng if rng is not None else random.Random()
        self._ignore = frozenset(config.ignore_fields)
        self._tolerances = Tolerances(
            max_length_ratio=config.max_length_ratio,
            max_latency_ratio=config.max_latency_ratio,
            min_similarity=config.min_similarity,
        )
        # Bursts of one minute's worth, then max_per_minute a minute (aiolimiter's semantics).
        self._limiter = RateLimiter(config.max_per_minute, 60.0, clock=clock, name=model.name)
        self._tasks: set[asyncio.Task[None]] = set()
        self.mirrored = 0
        self.noise_mirrored = 0
        self.candidate_failures = 0
        self.noise_failures = 0
        self.skipped = dict.fromkeys(SKIP_REASONS, 0)
        self.candidate = DiffCounters()
        self.noise = DiffCounters()

    @property
    def inflight(self) -> int:
        return len(self._tasks)

    def wrap(self, inner: Serve) -> Serve:
        """``inner`` (a route's service) with this shadow behind it."""

        def serve(call: ProxyCall) -> Awaitable[Reply | StreamReply]:
            # A plain function: a request not sampled costs one random draw, no extra frame.
            if call.parsed.stream:
                self.skipped["stream"] += 1
                return inner(call)
            if self._rng.random() >= self.config.sample:
                self.skipped["sample"] += 1
                return inner(call)
            return self._primary(inner, call)

        return serve

    async def _primary(self, inner: Serve, call: ProxyCall) -> Reply | StreamReply:
        start = self._clock.now()
        try:
            reply = await inner(call)
        except BaseException:
            self.skipped["primary_failed"] += 1
            raise
        if call.upstream_model != self._upstream:
            # Another model answered (a fallback): nothing of this model's to compare.
            self.skipped["fallback"] += 1
        elif isinstance(reply, Reply):
            self._offer(call, Observed(reply.status, reply.body, self._clock.now() - start))
        return reply

    def _offer(self, call: ProxyCall, primary: Observed) -> None:
        """Start a mirror of ``call`` unless a cap says no; never raises, never waits."""
        if len(self._tasks) >= self.config.max_concurrency:
            self.skipped["concurrency"] += 1
            return
        if not self._limiter.try_acquire()[0]:
            self.skipped["rate"] += 1
            return
        parsed = call.parsed
        body = (
            call.route_body
            if self._candidate_upstream == call.upstream_model
            else rewrite_model(parsed, self._candidate_upstream)
        )
        noise = self._noise is not None and self._rng.random() < self.config.noise_sample
        noise_body = call.route_body if noise else None  # the stable pool's own request
        self.mirrored += 1
        ctx = Context(
            deadline=self._clock.now() + self.config.timeout,
            priority=Priority.SHEDDABLE,
            tenant=current_context().tenant,
            request_id=None,
            attributes={"shadow": True},
        )
        # A fresh contextvars context: the mirror shares nothing with the client's request.
        task = asyncio.create_task(
            self._mirror(ctx, _PATHS[parsed.endpoint], body, noise_body, primary),
            context=contextvars.Context(),
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _mirror(
        self,
        ctx: Context,
        path: bytes,
        body: bytes,
        noise_body: bytes | None,
        primary: Observed,
    ) -> None:
        set_context(ctx)
        await asyncio.sleep(0)  # let the primary's answer go out first
        if noise_body is None or self._noise is None:
            candidate = await self._send(self._candidate, path, body)
            noise = None
        else:
            self.noise_mirrored += 1
            candidate, noise = await asyncio.gather(
                self._send(self._candidate, path, body),
                self._send(self._noise, path, noise_body),
            )
        if _failed(candidate):
            self.candidate_failures += 1
        self.candidate.add(
            compare(primary, candidate, ignore=self._ignore, tolerances=self._tolerances)
        )
        if noise is not None:
            if _failed(noise):
                self.noise_failures += 1
            self.noise.add(
                compare(primary, noise, ignore=self._ignore, tolerances=self._tolerances)
            )

    async def _send(self, pool: Pool, path: bytes, body: bytes) -> Observed:
        """One attempt (no retries: a mirror measures, it does not insist)."""
        start = self._clock.now()
        try:
            reply = await pool.attempt(
                path, _MIRROR_HEADERS, body, stream=False, key=None, tried=set()
            )
        except UpstreamHttpError as error:
            return Observed(error.status or 0, error.body, self._clock.now() - start)
        except Exception:
            return Observed(0, b"", self._clock.now() - start)
        assert isinstance(reply, Reply)
        return Observed(reply.status, reply.body, self._clock.now() - start)

    def snapshot(self) -> dict[str, Any]:
        candidate = self.candidate.snapshot()
        noise = self.noise.snapshot() if self._noise is not None else None
        return {
            "model": self.name,
            "pool": self._candidate.name,
            "noise_pool": None if self._noise is None else self._noise.name,
            "sample": self.config.sample,
            "max_per_minute": self.config.max_per_minute,
            "max_concurrency": self.config.max_concurrency,
            "mirrored": self.mirrored,
            "noise_mirrored": self.noise_mirrored,
            "inflight": self.inflight,
            "skipped": dict(self.skipped),
            "candidate_failures": self.candidate_failures,
            "noise_failures": self.noise_failures,
            "candidate": candidate,
            "noise": noise,
            "relative_diff_rates": (
                None
                if noise is None
                else relative_rates(candidate["diff_rates"], noise["diff_rates"])
            ),
        }

    async def wait_idle(self) -> None:
        """Return once every mirror started so far has ended (tests, benchmarks)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel the mirrors in flight and wait for them to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def _failed(observed: Observed) -> bool:
    return observed.status == 0 or observed.status >= 500


def build_shadows(
    models: list[ModelConfig] | tuple[ModelConfig, ...],
    routes: dict[str, ModelRoute],
    pools: dict[str, Pool],
    *,
    clock: Clock = REAL_CLOCK,
) -> dict[str, ShadowMirror]:
    """A mirror for each model with a ``shadow`` section, installed behind its route's service
    (requests reaching the model through another model's fallback are not mirrored)."""
    shadows: dict[str, ShadowMirror] = {}
    for model in models:
        shadow = model.shadow
        if shadow is None:
            continue
        noise = pools[shadow.noise_pool] if shadow.noise_pool is not None else None
        mirror = ShadowMirror(model, pools[shadow.pool], noise, clock=clock)
        route = routes[model.name]
        route.service = mirror.wrap(route.service)
        shadows[model.name] = mirror
    return shadows
