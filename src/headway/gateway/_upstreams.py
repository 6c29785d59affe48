"""Upstream pools at run time: one attempt against one endpoint, with every per-endpoint guard.

An attempt picks an endpoint (balancer: excluding endpoints this request already tried, as
Envoy's previous-hosts predicate) with room under its adaptive concurrency limit (waiting, FIFO
and bounded by the request deadline, when every endpoint is at its limit), checks its circuit
breaker, sends the request through the endpoint's keep-alive pool with the pool's connect/TTFT/
stall/total timeouts, and records the outcome everywhere it counts (breaker window, outlier
detection and latency estimate, adaptive limit). A streamed answer counts as started only once
its first chunk arrived, so a hung or failing upstream can still be retried elsewhere; its
outcome is recorded when the stream ends (:class:`StreamReply.finish`).

Guarantees: every admitted attempt is finished exactly once (success, failure, or release on
cancellation), so no slot, permit or outstanding count leaks.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from headway.config import PoolConfig
from headway.core import (
    NO_HOOKS,
    REAL_CLOCK,
    Clock,
    DeadlineScope,
    Hooks,
    Overloaded,
    current_context,
)
from headway.guard import AIMDLimit, CircuitBreaker, FixedLimit, Gradient2Limit, LimitAlgorithm
from headway.guard.breaker import BreakerConfig
from headway.guard.concurrency import is_overload_signal
from headway.http.client import UpstreamPool, UpstreamResponse
from headway.observe import AttemptSpan, GatewayTracer

from ._errors import UpstreamHttpError
from .balance import Endpoint as Slot
from .balance import (
    EndpointSet,
    LeastOutstandingP2C,
    OutlierPolicy,
    PeakEwma,
    PrefixAffinity,
    Strategy,
)

Header = tuple[bytes, bytes]
#: Observes one upstream attempt: ``(endpoint, status or 0 when no response, seconds)``.
AttemptObserver = Callable[[tuple[str, int, float]], object]

_JSON: Final = b"application/json"
UPSTREAM_IDLE_TIMEOUT: Final = 4.0


# init=False: a written-out __init__ is compiled and called natively (see core.Context).
@dataclass(init=False)
class Reply:
    """A whole (non-streamed) upstream answer: relayed as is."""

    status: int
    body: bytes
    content_type: bytes = _JSON
    #: The qualified ``pool/endpoint`` name that answered (for the access log).
    endpoint: str = ""

    def __init__(
        self, status: int, body: bytes, content_type: bytes = _JSON, endpoint: str = ""
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.endpoint = endpoint


@dataclass
class StreamReply:
    """A streamed answer whose first chunk has arrived; :meth:`finish` records the outcome."""

    response: UpstreamResponse
    first: bytes
    endpoint: str
    _finish: Callable[[BaseException | None, bool], object] = field(repr=False)
    _done: bool = False

    def finish(self, error: BaseException | None = None, *, cancelled: bool = False) -> None:
        if not self._done:
            self._done = True
            self._finish(error, cancelled)


class EndpointRuntime:
    """What the gateway keeps per upstream endpoint (the balancer slot's payload)."""

    def __init__(
        self,
        url: str,
        client: UpstreamPool,
        breaker: CircuitBreaker,
        limit: LimitAlgorithm,
        headers: list[Header],
    ) -> None:
        self.url = url
        self.client = client
        self.breaker = breaker
        self.limit = limit
        self.headers = headers


def endpoint_names(config: PoolConfig) -> list[str]:
    """The qualified ``pool/endpoint`` names of a pool's endpoints (breaker names, metric and
    access-log labels): the sim URL for a ``sim://`` endpoint, else ``ep<index>`` (a real URL
    may hold credentials or a host operators would rather not publish)."""
    return [
        f"{config.name}/{e.url if e.url.startswith('sim://') else f'ep{i}'}"
        for i, e in enumerate(config.endpoints)
    ]


class LimitGauges:
    """An endpoint's adaptive concurrency limit and requests outstanding, for scrape-time
    gauges (``kind`` ``"endpoint"``, named ``pool/endpoint``)."""

    kind = "endpoint"

    def __init__(self, name: str, slot: Slot[EndpointRuntime]) -> None:
        self.name = name
        self.slot = slot

    def snapshot(self) -> dict[str, float]:
        slot = self.slot
        return {"limit": float(slot.payload.limit.limit), "outstanding": float(slot.outstanding)}


def _limit_algorithm(config: PoolConfig) -> LimitAlgorithm:
    c = config.concurrency
    if c.algorithm == "fixed":
        return FixedLimit(c.initial)
    if c.algorithm == "aimd":
        return AIMDLimit(initial_limit=c.initial, min_limit=c.min, max_limit=c.max)
    return Gradient2Limit(initial_limit=c.initial, min_limit=c.min, max_limit=c.max)


def _strategy(config: PoolConfig) -> Strategy:
    if config.balancer == "ewma":
        return PeakEwma()
    if config.balancer == "prefix":
        return PrefixAffinity()
    return LeastOutstandingP2C()


def _breaker_config(config: PoolConfig) -> BreakerConfig:
    b = config.breaker
    return BreakerConfig(
        failure_rate_threshold=b.failure_rate,
        slow_call_rate_threshold=b.slow_call_rate,
        slow_call_duration=b.slow_call_seconds,
        window_size=b.window,
        minimum_number_of_calls=b.minimum_calls,
        wait_duration_in_open=b.open_seconds,
        permitted_calls_in_half_open=b.half_open_calls,
    )


class Pool:
    """One configured pool: endpoints behind a balancer, and the attempt logic."""

    def __init__(
        self,
        config: PoolConfig,
        resolve: Callable[[str], str],
        *,
        stream_buffer_bytes: int = 64 * 1024,
        clock: Clock = REAL_CLOCK,
        hooks: Hooks = NO_HOOKS,
        on_attempt: AttemptObserver | None = None,
        tracer: GatewayTracer | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self._clock = clock
        self._on_attempt = on_attempt
        self._tracer = tracer
        self.gauges: list[LimitGauges] = []
        self._waiters: deque[asyncio.Future[None]] = deque()
        t = config.timeouts
        self.connect_timeout = t.connect
        self.ttft_timeout = t.ttft
        self.stall_timeout = t.stall
        self.total_timeout = t.total
        o = config.outlier
        self.balancer: EndpointSet[EndpointRuntime] = EndpointSet(
            config.name,
            strategy=_strategy(config),
            outlier=OutlierPolicy(
                consecutive_failures=o.consecutive_failures,
                base_ejection_seconds=o.base_ejection_seconds,
                max_ejection_seconds=o.max_ejection_seconds,
                max_ejection_percent=o.max_ejection_percent,
            ),
            clock=clock,
            hooks=hooks,
        )
        breaker_config = _breaker_config(config)
        qualified = endpoint_names(config)
        for index, endpoint in enumerate(config.endpoints):
            url = resolve(endpoint.url)
            name = endpoint.url if endpoint.url.startswith("sim://") else f"ep{index}"
            headers: list[Header] = []
            if endpoint.api_key is not None:
                secret = endpoint.api_key.get_secret_value()
                headers.append((b"authorization", b"Bearer " + secret.encode()))
            client = UpstreamPool(
                url,
                max_connections=endpoint.max_connections,
                connect_timeout=t.connect,
                # Close idle connections before the upstream does: uvicorn (vLLM, SGLang and
                # most Python model servers) closes keep-alive connections after 5 s idle.
                idle_timeout=UPSTREAM_IDLE_TIMEOUT,
                # A slow stream reader pauses the upstream read at the same bound as the
                # client-side write buffer (server.limits.stream_buffer_bytes).
                max_buffered_bytes=stream_buffer_bytes,
                clock=clock,
                hooks=hooks,
                name=qualified[index],
            )
            breaker = CircuitBreaker(qualified[index], breaker_config, clock=clock, hooks=hooks)
            runtime = EndpointRuntime(url, client, breaker, _limit_algorithm(config), headers)
            slot = Slot(name, runtime, weight=endpoint.weight, breaker=breaker, clock=clock)
            self.balancer.add(slot)
            self.gauges.append(LimitGauges(qualified[index], slot))

    async def attempt(
        self,
        path: bytes,
        headers: list[Header],
        body: bytes,
        *,
        stream: bool,
        key: str | None,
        tried: set[Slot[Any]],
    ) -> Reply | StreamReply:
        """One upstream attempt; raises a typed error that says whether to try again."""
        slot = self._pick(key, tried)
        if slot is None:
            slot = await self._wait_for_room(key, tried)
        tried.add(slot)
        ep = slot.payload
        permit = ep.breaker.acquire()
        inflight = slot.outstanding
        start = slot.start()
        deadline = min(current_context().deadline, start + self.total_timeout)
        response: UpstreamResponse | None = None
        failure: BaseException | None = None
        empty = False
        span: AttemptSpan | None = None
        if self._tracer is not None:  # the attempt's own traceparent replaces the caller's
            span = self._tracer.attempt(self.name, ep.breaker.name, ep.url, path)
            headers = span.inject(headers)
        try:
            response = await ep.client.request(
                "POST",
                path,
                ep.headers + headers if ep.headers else headers,
                body,
                deadline=deadline,
                first_byte_timeout=self.ttft_timeout,
                first_chunk_timeout=self.ttft_timeout if stream else None,
                stall_timeout=self.stall_timeout,
            )
            status = response.status
            if status >= 500 or status == 429:
                error_body = await response.read()
                raise UpstreamHttpError(
                    f"upstream answered {status}",
                    status=status,
                    body=error_body,
                    content_type=response.header(b"content-type") or _JSON,
                    retry_after=_retry_after(response.header(b"retry-after")),
                )
            if not stream or status != 200:
                data = response.read_now()
                if data is None:
                    data = await response.read()
                # A 4xx is the client's doing, not the endpoint's: it counts as a success.
                took = self._finish(slot, permit, start, inflight, None, False)
                if self._on_attempt is not None:
                    self._on_attempt((ep.breaker.name, status, took))
                if span is not None:
                    span.answered(status)
                return Reply(
                    status, data, response.header(b"content-type") or _JSON, ep.breaker.name
                )
            first = await response.__anext__()
        except StopAsyncIteration:
            empty = True
        except BaseException as error:
            failure = error
            if span is not None:
                span.fail(error)
            if isinstance(error, Exception):
                took = self._finish(slot, permit, start, inflight, error, False)
                if self._on_attempt is not None:
                    code = error.status if isinstance(error, UpstreamHttpError) else None
                    self._on_attempt((ep.breaker.name, code or 0, took))
            else:
                self._finish(slot, permit, start, inflight, None, True)
        # The response is closed after the ``try``: an await in a handler is what mypyc gets
        # wrong (tests/unit/test_native.py).
        if failure is not None:
            if response is not None:
                await response.aclose()
            raise failure
        assert response is not None  # set once the try got past the request
        if empty:  # a stream that ended before its first chunk
            took = self._finish(slot, permit, start, inflight, None, False)
            if self._on_attempt is not None:
                self._on_attempt((ep.breaker.name, 200, took))
            if span is not None:
                span.answered(200)
            await response.aclose()
            return Reply(200, b"", b"text/event-stream", ep.breaker.name)
        if self._on_attempt is not None:  # a stream's attempt is timed to its first chunk
            self._on_attempt((ep.breaker.name, 200, self._clock.now() - start))
        # Only a stream needs its outcome recorded later, so only it pays for a partial.
        finish = functools.partial(self._finish, slot, permit, start, inflight)
        if span is not None:  # the attempt's span ends with its stream
            return StreamReply(response, first, ep.breaker.name, span.wrap_finish(finish))
        return StreamReply(response, first, ep.breaker.name, finish)

    def _finish(
        self,
        slot: Slot[EndpointRuntime],
        permit: int,
        start: float,
        inflight: int,
        error: BaseException | None,
        cancelled: bool,
    ) -> float:
        """Record one attempt's outcome with the breaker, the balancer and the adaptive limit;
        returns how long it took.

        A method taking the attempt's state, not a per-attempt closure: the unary path (most
        requests) then allocates no function and cell objects for it."""
        ep = slot.payload
        duration = self._clock.now() - start
        if self._waiters:
            self._wake_one()
        if cancelled:
            ep.breaker.release(permit)
            slot.release()
            return duration
        if error is None:
            ep.breaker.on_success(permit, duration)
            slot.finish(start, duration, ok=True)
            ep.limit.on_sample(start, duration, inflight, False)
            return duration
        ep.breaker.on_error(permit, error, duration)
        slot.finish(start, duration, ok=False, error_kind=getattr(error, "reason", None))
        ep.limit.on_sample(start, duration, inflight, is_overload_signal(error))
        return duration

    # -- room under the endpoints' concurrency limits ------------------------------------------

    def _pick(self, key: str | None, tried: set[Slot[Any]]) -> Slot[EndpointRuntime] | None:
        """The balancer's choice if it has room under its adaptive limit, else any candidate
        with room; ``None`` when every endpoint is at its limit."""
        slot = self.balancer.pick(key, tried)
        if slot is None:
            raise Overloaded(f"pool {self.name} has no endpoints", reason="no_endpoint")
        if slot.outstanding < slot.payload.limit.limit:
            return slot
        for other in self.balancer.candidates:
            if other not in tried and other.outstanding < other.payload.limit.limit:
                return other
        return None

    async def _wait_for_room(self, key: str | None, tried: set[Slot[Any]]) -> Slot[EndpointRuntime]:
        """Wait (FIFO, bounded by the request's deadline) until an endpoint has room.

        The adaptive limits protect the upstreams; excess requests wait here rather than fail.
        How many may wait is bounded by the gateway's admission (``admission.max_inflight``),
        and the request deadline bounds how long."""
        loop = asyncio.get_running_loop()
        while True:
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                scope = DeadlineScope(current_context().deadline, clock=self._clock)
                async with scope:  # aexit never waits
                    await waiter
            finally:
                if not waiter.done():
                    waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            slot = self._pick(key, tried)
            if slot is not None:
                return slot

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def observables(self) -> list[Any]:
        """Everything here with ``kind``/``name``/``snapshot()``, for scrape-time gauges."""
        out: list[Any] = [self.balancer]
        for gauges in self.gauges:
            ep = gauges.slot.payload
            out.append(ep.breaker)
            out.append(ep.client)
            out.append(gauges)
        return out

    def snapshot(self) -> dict[str, Any]:
        endpoints = []
        for slot in self.balancer.endpoints:
            ep = slot.payload
            endpoints.append(
                {
                    **slot.snapshot(),
                    "name": slot.name,
                    "limit": ep.limit.limit,
                    "breaker": ep.breaker.state.name.lower(),
                    "connections": ep.client.snapshot(),
                }
            )
        return {
            "pool": self.name,
            **self.balancer.snapshot(),
            "waiting": len(self._waiters),
            "endpoints": endpoints,
        }

    async def aclose(self) -> None:
        for slot in self.balancer.endpoints:
            await slot.payload.client.aclose()


def _retry_after(value: bytes | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
