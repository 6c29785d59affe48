"""Model routes: what a public model name means, as a stack of guards around pool attempts.

For each configured model the route reads, in the order a request meets it::

    Fallback   -> the fallback models in order, when this one is shed, open or failing
    Cache      (opt-in, deterministic non-streamed requests only, per tenant)
    Retry      -> another endpoint, before the first byte only, within the retry budget
    Hedge      (opt-in, non-streamed only) a second attempt after a delay
    attempt    -> Pool.attempt: balancer, breaker, adaptive limit, timeouts

A streamed request's attempt returns once the first chunk arrived, so retry, hedge and fallback
never act after the first byte reached the client (ARCHITECTURE "Streams").
"""

from __future__ import annotations

from collections.abc import Awaitable, Hashable, Mapping
from typing import Any, Final

from headway.config import ModelConfig
from headway.core import (
    NO_HOOKS,
    REAL_CLOCK,
    Clock,
    Hooks,
    Layer,
    Rejected,
    Service,
    Stack,
    UpstreamError,
    current_context,
)
from headway.guard import (
    Cache,
    ExponentialBackoff,
    Fallback,
    Hedge,
    Retry,
    RetryBudget,
    RetryPolicy,
)

from ._openai import ParsedRequest, is_deterministic, rewrite_model
from ._upstreams import Header, Pool, Reply, StreamReply
from .balance import Endpoint as Slot
from .balance import prompt_prefix_key

_PATHS: Final = {
    "chat": b"/chat/completions",
    "completions": b"/completions",
    "embeddings": b"/embeddings",
}


class ProxyCall:
    """One client request on its way through a route (and maybe its fallbacks)."""

    def __init__(self, parsed: ParsedRequest, headers: list[Header]) -> None:
        self.parsed = parsed
        self.headers = headers
        self.route_body = parsed.raw
        self.upstream_model = parsed.model
        self.tried: set[Slot[Any]] = set()


def _affinity_key(route: ModelRoute, call: ProxyCall) -> str | None:
    spec = route.affinity
    if spec is None:
        return None
    parsed = call.parsed
    if spec == "user":
        return parsed.user
    if spec == "prompt_prefix":
        body = parsed.body
        source = body.get("messages") or body.get("prompt") or body.get("input")
        return prompt_prefix_key(source, route.prefix_chars) if source is not None else None
    if spec.startswith("header:"):
        wanted = spec[7:].lower().encode()
        for name, value in call.headers:
            if name == wanted:
                return value.decode("latin-1")
    return None


class ModelRoute:
    """A public model name: its pool, upstream model id, and its guard stacks."""

    def __init__(
        self,
        config: ModelConfig,
        pool: Pool,
        routes: Mapping[str, ModelRoute],
        *,
        clock: Clock = REAL_CLOCK,
        hooks: Hooks = NO_HOOKS,
    ) -> None:
        self.config = config
        self.name = config.name
        self.upstream_model = config.upstream
        self.pool = pool
        self._routes = routes  # all routes of this runtime, for fallbacks (filled by the owner)
        self.affinity: str | None = (
            pool.config.affinity.key if pool.config.balancer == "prefix" else None
        )
        self.prefix_chars = pool.config.affinity.prefix_chars
        r = config.retries
        budget = RetryBudget(
            r.budget_percent / 100.0,
            min_retries_per_second=r.min_retries_per_second,
            clock=clock,
        )
        retry = Retry(
            policy=RetryPolicy(r.max_attempts),
            backoff=ExponentialBackoff(r.backoff_base, r.backoff_cap),
            budget=budget,
            clock=clock,
            hooks=hooks,
            name=config.name,
        )
        unary: list[Layer] = [retry]
        if config.hedge is not None:
            h = config.hedge
            unary.append(
                Hedge(
                    h.delay,
                    percentile=h.percentile,
                    min_delay=h.min_delay,
                    budget=budget,
                    deposit=False,  # the retry layer above already credits each request
                    clock=clock,
                    hooks=hooks,
                    name=config.name,
                )
            )
        self._stream_primary = retry.wrap(self._attempt)
        self._unary_primary = Stack(*unary).wrap(self._attempt)
        # The cache sits inside the fallback: it only ever holds this model's own answers, so a
        # degraded answer from a fallback model is never served after this model recovers.
        service: Service[ProxyCall, Reply | StreamReply] = self.serve_primary
        self.cache: Cache | None = None
        if config.cache.enabled:
            self.cache = Cache(
                key=_cache_key,
                ttl=config.cache.ttl,
                max_entries=config.cache.max_entries,
                should_cache=lambda reply: isinstance(reply, Reply) and reply.status == 200,
                clock=clock,
                hooks=hooks,
                name=config.name,
            )
            service = self.cache.wrap(service)
        if config.fallbacks:
            service = Fallback(self._fall_back, clock=clock, hooks=hooks, name=config.name).wrap(
                service
            )
        self.service = service

    async def __call__(self, call: ProxyCall) -> Reply | StreamReply:
        """Serve ``call`` on this model, falling back to the configured models in order."""
        return await self.service(call)

    def serve_primary(self, call: ProxyCall) -> Awaitable[Reply | StreamReply]:
        """Serve ``call`` on this model's own pool only (retries and hedges, no fallback).

        A plain function returning the guarded stack's awaitable, not a coroutine: every
        caller awaits it at once, and one coroutine frame fewer is one ``send`` fewer each
        time the request resumes (it sits on every proxied request's path)."""
        call.tried = set()
        if call.upstream_model != self.upstream_model:
            call.upstream_model = self.upstream_model
            call.route_body = rewrite_model(call.parsed, self.upstream_model)
        if call.parsed.stream:
            return self._stream_primary(call)
        return self._unary_primary(call)

    async def _fall_back(self, call: ProxyCall) -> Reply | StreamReply:
        """Try each fallback model in order; the last one's error is the answer."""
        last: Exception | None = None
        for name in self.config.fallbacks:
            route = self._routes[name]
            try:
                return await route.serve_primary(call)
            except (Rejected, UpstreamError) as error:
                last = error
        assert last is not None
        raise last

    # The attempt returns ``Pool.attempt``'s coroutine instead of awaiting it, for the same
    # reason as ``serve_primary``: the retry layer awaits it inside its own ``try``. Both the
    # streamed and the whole-answer stacks end here; the request says which it is.
    def _attempt(self, call: ProxyCall) -> Awaitable[Reply | StreamReply]:
        return self.pool.attempt(
            _PATHS[call.parsed.endpoint],
            call.headers,
            call.route_body,
            stream=call.parsed.stream,
            key=_affinity_key(self, call),
            tried=call.tried,
        )


def _cache_key(call: ProxyCall) -> Hashable | None:
    """Exact match on the body, per tenant: sharing answers across tenants would let one tenant
    learn from an instant reply that another recently sent the same prompt (the prompt-cache
    timing side channel), which is why providers scope prompt caches per organization."""
    parsed = call.parsed
    if parsed.stream or not is_deterministic(parsed):
        return None
    return (current_context().tenant, parsed.endpoint, parsed.model, parsed.raw)
