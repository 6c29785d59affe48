"""The gateway: an OpenAI-compatible front door that routes to upstream pools safely.

One request, top to bottom::

    authenticate (API key -> tenant)             401
    parse and validate the body                  400 / 413
    route (public model name -> ModelRoute)      404, and 403 if the tenant may not use it
    deadline (client's timeout header, capped)   504 when it passes
    admission (priority queue, fair by tenant)   503 + Retry-After, lowest priority first
    tenant quotas (RPM, TPM, concurrency)        429 + Retry-After
    route: cache / fallback / retry / hedge / attempt
    relay: whole body, or SSE chunks as they arrive; usage corrects the token quota

Every refusal is an OpenAI-format error from ``_errors``; nothing else turns errors into HTTP.
A streamed answer that breaks after its first byte ends with an SSE ``error`` event (the status
is already sent), which the official client raises as ``APIError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from contextvars import Token
from typing import IO, Any, Final, NamedTuple

import orjson

from headway.config import GatewayConfig, diff_configs
from headway.core import (
    NO_HOOKS,
    REAL_CLOCK,
    Clock,
    Context,
    FanoutHooks,
    Hooks,
    Priority,
    reset_context,
    set_context,
)
from headway.http import HttpServer, Request, Response, StreamingResponse
from headway.observe import (
    AccessLog,
    GatewayMetrics,
    GatewayTracer,
    RequestTrace,
    SloCollector,
    TracingHooks,
    TrailHooks,
)
from headway.sim import SimServer
from headway.store import LimitStore, MemoryStore, RedisStore, open_control_store

from ._admin import AdminApi
from ._errors import (
    MethodNotAllowed,
    ModelNotFound,
    NotFound,
    error_response_for,
    http_error,
    reason_label,
)
from ._openai import Endpoint, ParsedRequest, extract_usage, parse_body
from ._openapi import DOCUMENT_JSON
from ._recorder import CLIENT_CLOSED, Seen, StreamWatch, new_request_id
from ._relay import relay
from ._rollout_metrics import RolloutCollector
from ._rollouts import RolloutManager
from ._routes import ModelRoute, ProxyCall
from ._runtime import Runtime
from ._split import Side
from ._stage import StagedConfig
from ._tenants import Admission, Tenant
from ._upstreams import Reply, endpoint_names

log: Final = logging.getLogger("headway.gateway")

_ENDPOINTS: Final[dict[str, Endpoint]] = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
# Request headers forwarded upstream (everything else is the client's business with us): the
# W3C trace context. Not OpenAI-Organization/-Project: with the gateway's own upstream key they
# would let a tenant choose which of the gateway's organizations or projects gets billed.
_FORWARD: Final = (b"traceparent", b"tracestate")
# Client timeout headers, in seconds: ours, and the one the official OpenAI SDKs send.
_TIMEOUT_HEADERS: Final = (b"x-headway-timeout", b"x-stainless-timeout")
_JSON: Final = b"application/json"
_CONTENT_TYPE: Final = (b"content-type", _JSON)


#: The access-log logger: one JSON line per request at INFO (configure its handler and level).
ACCESS_LOGGER: Final = "headway.access"
# How often a buffered access-log stream is flushed: lines reach the file within a second, and
# the request path never waits on a write syscall (our choice; nginx's access_log flush= is
# similar, e.g. flush=1s).
ACCESS_LOG_FLUSH_SECONDS: Final = 1.0


class _Labels(NamedTuple):
    """The configured names metric labels may take (anything else is "other")."""

    models: list[str]
    tenants: list[str]
    endpoints: list[str]


def _label_sources(config: GatewayConfig) -> _Labels:
    return _Labels(
        [m.name for m in config.models],
        [t.name for t in config.tenants],
        [name for pool in config.pools for name in endpoint_names(pool)],
    )


class _Claim(Seen):
    """One API request as it is served: made as it arrives, filled by ``_prepare``, and what
    it holds (given back by ``Gateway._serve``, or by the stream's ``relay`` when it ends).
    It is the request's :class:`Seen` too, whether observed or not: one object a request, not
    two (a second GC-tracked object's alloc, clear and dealloc was ~300 instructions)."""

    # A stream hands its claim to its watch, which keeps it until the stream ends; the parsed
    # body is dropped then (the client's bytes stay with the connection's request anyway).
    __deletable__ = ["parsed"]
    # Set by ``_prepare``; read only once ``prepared`` is True.
    parsed: ParsedRequest
    model_route: ModelRoute  # the model's route (a flag may have chosen another model's)
    side: Side | None  # the canary split's side, when the model has one
    caller: Tenant
    ctx: Context
    token: Token[Context]  # set_context's, for reset_context

    def __init__(self, start: float, route: str, trace: RequestTrace | None) -> None:
        super().__init__(start, route, trace)
        self.prepared = False  # context set and counted in the runtime: to give back
        self.admitted = False  # inside the admission (load shedder)
        self.admission: Admission | None = None  # the tenant's quota claim
        self.sync = True  # the quota store answers in-process (no await to give back)


class Gateway:
    """Owns the API and admin servers, the in-process sims, the store and the live runtime."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        reuse_port: bool = False,
        clock: Clock = REAL_CLOCK,
        hooks: Hooks = NO_HOOKS,
        access_log_sink: IO[bytes] | None = None,
        config_path: str | None = None,
        control_url: str | None = None,
        admin_token: str | None = None,
    ) -> None:
        """``access_log_sink``: a buffered binary stream for access-log lines (flushed every
        ``ACCESS_LOG_FLUSH_SECONDS``), far cheaper per line than the default, the
        ``headway.access`` logger at INFO. ``config_path``: the file ``config`` came from,
        which the admin API's reload re-reads (None: the embedded default). ``control_url``:
        the control-plane store (default: ``state.control_url``). ``admin_token``: overrides
        ``server.admin_token`` (``headway serve --admin-token``)."""
        self.config = config
        self._reuse_port = reuse_port
        self._clock = clock
        self._hooks = hooks
        labels = _label_sources(config)
        self.metrics = GatewayMetrics(
            models=labels.models, tenants=labels.tenants, endpoints=labels.endpoints, clock=clock
        )
        self._access_sink: IO[bytes] | logging.Logger = (
            logging.getLogger(ACCESS_LOGGER) if access_log_sink is None else access_log_sink
        )
        # One access log for every runtime (a reload only changes its model allow-list). Lines
        # come a loop turn's batch at a time from each runtime's Recorder, after the answers.
        self._access = AccessLog(self._access_sink, models=labels.models)
        self._flusher: asyncio.Task[None] | None = None
        self._trail = TrailHooks()
        self._sims: dict[str, tuple[Any, SimServer]] = {}
        self._store: LimitStore = self._make_store(config)
        self.runtime: Runtime | None = None
        #: A candidate config serving a share of tenants (``_stage``; set by the control plane).
        self.staged: StagedConfig | None = None
        # The control-plane store (state.control_url; None: rollout state in memory only).
        url = control_url or config.state.control_url
        self.control_store = None if url is None else open_control_store(url)
        self.rollouts = RolloutManager(lambda: self.runtime, store=self.control_store, clock=clock)
        self._api = HttpServer(self.handle, config.server.limits.to_http_limits(), name="api")
        self.admin = AdminApi(self, clock=clock, token=admin_token)
        self.admin.config_path = config_path
        self._admin = HttpServer(self.handle_admin, name="admin")
        # Guards' snapshots are read at scrape time from whatever runtime is live then.
        self.metrics.snapshots.add_source(self._observables)
        # SLO burn rates, likewise read at scrape time from the live runtime's book.
        self.metrics.registry.register(SloCollector(lambda: getattr(self.runtime, "slos", None)))
        self.metrics.registry.register(RolloutCollector(self.rollouts, lambda: self.runtime))
        self._retired: set[asyncio.Task[None]] = set()
        # The live tracer (observe.tracing), and every tracer not yet flushed and closed.
        self._tracer: GatewayTracer | None = None
        self._tracers: set[GatewayTracer] = set()
        self.api_port = 0
        self.admin_port = 0

    def _hooks_for(self, config: GatewayConfig) -> Hooks:
        """The caller's hooks, plus metrics and the access log's decision trail when on."""
        targets: list[Hooks] = [] if self._hooks is NO_HOOKS else [self._hooks]
        if config.observe.metrics:
            targets.append(self.metrics.hooks)
        if config.observe.access_log:
            targets.append(self._trail)
        if config.observe.tracing.enabled:
            targets.append(TracingHooks())
        if not targets:
            return NO_HOOKS
        return targets[0] if len(targets) == 1 else FanoutHooks(*targets)

    def _observables(self) -> list[Any]:
        runtime = self.runtime
        out: list[Any] = [self._api]
        if runtime is not None:
            out.extend(runtime.observables())
        return out

    def _make_store(self, config: GatewayConfig) -> LimitStore:
        url = config.state.url
        if url.startswith(("redis://", "rediss://")):
            return RedisStore(url=url, clock=self._clock, hooks=self._hooks_for(config))
        return MemoryStore(clock=self._clock)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self, *, api_port: int | None = None, admin_port: int | None = None) -> None:
        """Start sims, build the runtime, then listen (ports override the config's, 0 = any)."""
        self.runtime = await self._build(self.config)
        await self.rollouts.resume()  # unfinished rollouts in the control store run on
        sink = self._access_sink
        if not isinstance(sink, logging.Logger):
            self._flusher = asyncio.create_task(self._flush_every(sink))
        host, port = self.config.server.listen_address
        self.api_port = await self._api.start(
            host, port if api_port is None else api_port, reuse_port=self._reuse_port
        )
        ahost, aport = self.config.server.admin_address
        self.admin_port = await self._admin.start(
            ahost, aport if admin_port is None else admin_port, reuse_port=self._reuse_port
        )
        self.admin.start()

    async def _build(self, config: GatewayConfig) -> Runtime:
        urls: dict[str, str] = {}
        for sim in config.sims:
            current = self._sims.get(sim.name)
            if current is not None and current[0] == sim:
                urls[sim.name] = f"{current[1].base_url}"
                continue
            if current is not None:
                await current[1].stop()
            server = SimServer(sim.to_sim_config(), clock=self._clock, name=sim.name)
            await server.start("127.0.0.1", 0)
            self._sims[sim.name] = (sim, server)
            urls[sim.name] = server.base_url
        labels = _label_sources(config)
        self.metrics.set_allowed(
            models=labels.models, tenants=labels.tenants, endpoints=labels.endpoints
        )
        observe = config.observe
        self._access.set_models(labels.models)
        access_log = self._access if observe.access_log else None
        return Runtime(
            config,
            urls,
            self._store,
            clock=self._clock,
            hooks=self._hooks_for(config),
            metrics=self.metrics if observe.metrics else None,
            access_log=access_log,
            tracer=self._tracer_for(config),
            slos_before=None if self.runtime is None else self.runtime.slos,
        )

    def _tracer_for(self, config: GatewayConfig) -> GatewayTracer | None:
        """The live tracer while ``observe.tracing`` is unchanged (spans keep flowing across a
        reload), a new one when it changed, None when it is off."""
        t = config.observe.tracing
        if not t.enabled:
            self._tracer = None
            return None
        models = [m.name for m in config.models]
        current = self._tracer
        if current is not None and current.settings == t:
            current.set_models(models)
            return current
        self._tracer = GatewayTracer(
            endpoint=t.endpoint,
            service_name=t.service_name,
            sample_ratio=t.sample_ratio,
            export_timeout=t.export_timeout,
            batch_delay=t.batch_delay,
            max_queue=t.max_queue,
            max_batch=t.max_batch,
            headers={k: v.get_secret_value() for k, v in t.headers.items()},
            clock=self._clock,
            models=models,
            settings=t,
        )
        self._tracers.add(self._tracer)
        return self._tracer

    async def reload(self, config: GatewayConfig) -> None:
        """Swap in ``config`` atomically; requests in flight finish on the old runtime."""
        restart_only = [c for c in diff_configs(self.config, config) if c.startswith("server.")]
        if restart_only:
            # Listening sockets and connection limits belong to the running servers.
            log.warning(
                "reload: server settings take effect only after a restart: %s",
                "; ".join(restart_only),
            )
        new = await self._build(config)
        if self.runtime is not None:
            new.adopt(self.runtime)  # live canary weights survive a reload
        self.rollouts.on_reload(new)
        self.admin.on_reload(new)
        old, self.runtime, self.config = self.runtime, new, config
        if old is not None:
            task = asyncio.create_task(self._retire(old, config.server.drain_timeout))
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)

    async def _flush_every(self, sink: IO[bytes]) -> None:
        while True:
            await self._clock.sleep(ACCESS_LOG_FLUSH_SECONDS)
            sink.flush()

    async def _retire(self, runtime: Runtime, grace: float) -> None:
        await runtime.drained(grace)
        if runtime.recorder is not None:  # its last batch, before its tracer may close
            runtime.recorder.drain()
        await runtime.aclose()
        tracer = runtime.tracer
        if tracer is not None and tracer is not self._tracer and tracer in self._tracers:
            self._tracers.discard(tracer)
            await tracer.aclose()

    async def stop(self, grace: float = 30.0) -> None:
        """Stop accepting, let in-flight requests and streams finish for ``grace`` seconds."""
        await self._admin.stop(0.5)
        await self.admin.aclose()
        await self.rollouts.aclose()
        if self.control_store is not None:
            await self.control_store.aclose()
        await self._api.stop(grace)
        for task in list(self._retired):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.runtime is not None:
            await self.runtime.aclose()
        self.flush_observations()  # before the tracers and the access log are flushed
        for tracer in list(self._tracers):  # every span of a finished request is exported
            self._tracers.discard(tracer)
            await tracer.aclose()
        for _, server in self._sims.values():
            await server.stop()
        await self._store.aclose()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            sink = self._access_sink
            if not isinstance(sink, logging.Logger):
                sink.flush()

    # -- the API -------------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response | StreamingResponse:
        runtime = self.runtime
        if runtime is None:
            return _json(503, {"error": {"message": "starting", "type": "server_error"}})
        if self.staged is not None:  # a staged config serves a sticky share of tenants (_stage)
            runtime = self.staged.pick(request.headers, runtime)
        path = request.path
        endpoint = _ENDPOINTS.get(path)
        if endpoint is not None:
            return await self._serve(runtime, request, endpoint)
        try:
            if path == "/v1/models":
                return self._models(runtime, request)
            if path == "/healthz":
                return _json(200, {"status": "ok"})
            if path == "/readyz":
                return self.ready(runtime)
            if path == "/openapi.json":
                return Response(200, DOCUMENT_JSON, content_type=_JSON)
            raise NotFound(f"unknown path {path}")
        except Exception as error:
            return error_response_for(error)

    async def _serve(
        self, runtime: Runtime, request: Request, endpoint: Endpoint
    ) -> Response | StreamingResponse:
        """One API call: prepared (sync), admitted and answered (``_admitted``), then what it
        holds given back and, when observed, its outcome recorded (a stream's when it ends, in
        ``relay``). Two coroutines deep: each one fewer is a frame fewer on every request."""
        recorder = runtime.recorder
        trace = None
        if recorder is not None:
            tracer = runtime.tracer
            if tracer is not None:
                trace = tracer.request(request.method, request.path, endpoint, request.headers)
                trace.enter()
        # Its arrival: the latency and the deadline count from it.
        claim = _Claim(self._clock.now(), endpoint, trace)
        failure: BaseException | None = None
        try:
            self._prepare(runtime, request, endpoint, claim)
            response = await self._admitted(runtime, request, claim, recorder is not None)
        except BaseException as error:  # failures, and cancellation (the client went away)
            failure = error
        # Give back what the request holds, after the ``try`` (an await in a handler or a
        # ``finally`` is what mypyc gets wrong: tests/unit/test_native.py). A stream keeps
        # its claim until it ends (``relay`` gives it back).
        if claim.prepared:
            admission = claim.admission
            if failure is not None and admission is not None:
                if claim.sync:
                    admission.release_nowait()
                else:
                    await admission.release()
            if not claim.stream:
                if claim.admitted:
                    runtime.admission.leave()
                runtime.leave()
            reset_context(claim.token)
        if trace is not None:
            trace.exit()
        if failure is None:
            if recorder is not None and not claim.stream:
                status = response.status
                recorder.record(claim, status, "ok" if status < 400 else "upstream_status")
            return response
        if isinstance(failure, Exception):
            if recorder is not None:
                err = http_error(failure)
                recorder.record(claim, err.status, reason_label(err.reason))
            return error_response_for(failure)
        if recorder is not None and isinstance(failure, asyncio.CancelledError):
            recorder.record(claim, CLIENT_CLOSED, "client_closed")
        raise failure

    def _models(self, runtime: Runtime, request: Request) -> Response:
        tenant = runtime.directory.authenticate_headers(request.headers)
        created = 0
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "headway"}
            for name in runtime.routes
            if name in tenant.allowed_models
        ]
        return _json(200, {"object": "list", "data": data})

    def ready(self, runtime: Runtime) -> Response:
        ready = bool(runtime.routes) and all(
            len(pool.balancer.endpoints) for pool in runtime.pools.values()
        )
        return _json(200 if ready else 503, {"ready": ready, "models": list(runtime.routes)})

    def _prepare(
        self, runtime: Runtime, request: Request, endpoint: Endpoint, claim: _Claim
    ) -> None:
        """Who asks (401), what (400/413), for which model (404/403), by when, how urgently:
        the request's context, made current, and counted in its runtime. ``claim`` records
        what is known as it is known (a refusal's outcome names its tenant and model)."""
        if request.method != "POST":
            raise MethodNotAllowed(f"{request.path} takes POST")
        tenant = runtime.directory.authenticate_headers(request.headers)
        claim.tenant = tenant.name
        parsed = parse_body(request.body, endpoint)
        claim.model = parsed.model
        route = runtime.routes.get(parsed.model)
        if route is None:
            raise ModelNotFound(
                f"the model {parsed.model!r} does not exist", param="model", code="model_not_found"
            )
        runtime.tenant_guards.check_model(tenant, parsed.model)
        served = parsed.model
        flag_route = runtime.flag_routes.get(served)
        if flag_route is not None:  # a flag may send the request to another model (_flag_routes)
            chosen = flag_route.choose(request.headers, parsed.user, tenant.name, tenant.priority)
            if chosen is not None:
                served, route = chosen
        split = runtime.splits.get(served)  # a canary split: which side serves (_split)
        side = None if split is None else split.choose(request.headers, tenant.name, parsed.user)
        timeout = runtime.model_timeouts.get(served, runtime.default_timeout)
        for name in _TIMEOUT_HEADERS:
            value = request.headers.get(name)
            if value is not None:
                asked = _seconds(value)
                if asked is not None:
                    timeout = min(asked, runtime.max_timeout)
                break
        priority = tenant.priority
        lowered = request.headers.get(b"x-headway-priority")
        if lowered is not None:  # a caller may lower its priority, never raise it
            with contextlib.suppress(ValueError):
                priority = min(priority, Priority.parse(lowered.decode("latin-1")))
        ctx = Context(
            deadline=claim.start + timeout,
            priority=priority,
            tenant=tenant.name,
            request_id=new_request_id(),
            attributes={},
        )
        claim.request_id = ctx.request_id
        claim.attributes = ctx.attributes
        claim.parsed = parsed
        claim.model_route = route
        claim.side = side
        claim.caller = tenant
        claim.ctx = ctx
        claim.token = set_context(ctx)
        runtime.enter()
        claim.prepared = True

    async def _admitted(
        self, runtime: Runtime, request: Request, claim: _Claim, observed: bool
    ) -> Response | StreamingResponse:
        """Admission, the tenant's quotas, the route, and the answer; ``claim`` records what
        the request took, for ``_serve`` to give back, and (``observed``) what it got."""
        parsed = claim.parsed
        side = claim.side
        tenant = claim.caller
        trace = claim.trace
        ctx = claim.ctx
        if trace is not None:
            trace.admission_start(ctx.priority, tenant.name)
        admission_queue = runtime.admission
        if not admission_queue.enter_now():
            await admission_queue.__aenter__()
        claim.admitted = True
        guards = runtime.tenant_guards
        estimate = guards.estimate_tokens(
            parsed.estimated_prompt_tokens, parsed.max_tokens, parsed.n
        )
        # In-process store: admit and settle as plain calls (no coroutine frames); the
        # checks are the same ones ``admit``/``settle`` run (they delegate to these).
        sync = claim.sync = guards.sync
        if sync:
            admission = guards.admit_nowait(tenant, estimate)
        else:
            admission = await guards.admit(tenant, estimate)
        claim.admission = admission
        if trace is not None:
            trace.admission_end()
        fields = request.headers
        if b"traceparent" in fields or b"tracestate" in fields:
            headers = [(h, v) for h in _FORWARD if (v := fields.get(h)) is not None]
            headers.append(_CONTENT_TYPE)
        else:  # the common case, without the comprehension's function frame
            headers = [_CONTENT_TYPE]
        call = ProxyCall(parsed, headers)
        # ``route.service`` is what ``route(call)`` awaits; calling it directly saves a frame.
        reply = await (claim.model_route.service if side is None else side.service)(call)
        if isinstance(reply, Reply):
            # Usage corrects a TPM charge and feeds metrics: parsed only if either wants it.
            counts = admission.counts_tokens
            usage = extract_usage(reply.body) if counts or observed else None
            total = usage.total_tokens if counts and usage is not None else None
            if observed:
                claim.endpoint = reply.endpoint
                if usage is not None:
                    claim.prompt = usage.prompt_tokens
                    claim.completion = usage.completion_tokens
            if sync:
                admission.settle_nowait(total)
            else:
                await admission.settle(total)
            return Response(
                reply.status,
                reply.body,
                content_type=reply.content_type,
                headers=() if side is None else side.headers(ctx),
            )
        claim.stream = True
        prompt_tokens = parsed.estimated_prompt_tokens
        del claim.parsed  # the watch keeps the claim while the stream runs, not the body
        watch: StreamWatch | None = None
        if observed:  # the relay tells the watch when the stream ends
            claim.endpoint = reply.endpoint
            recorder = runtime.recorder
            assert recorder is not None  # a request is observed only by an observed runtime
            # Made here, compiled, not in the relay: there it was a keyword-parsed call from
            # interpreted code (~300 instructions).
            watch = StreamWatch(recorder, claim, reply.response)
        return StreamingResponse(
            relay(runtime, reply, admission, prompt_tokens, watch),
            headers=[(b"cache-control", b"no-cache")]
            + ([] if side is None else list(side.headers(ctx))),
        )

    # -- the admin port ----------------------------------------------------------------------

    async def handle_admin(self, request: Request) -> Response:
        self.flush_observations()  # what the admin port shows includes every answered request
        return await self.admin.handle(request)

    def flush_observations(self) -> None:
        """Record the live runtime's finished requests now, not at the end of the loop turn."""
        runtime = self.runtime
        if runtime is not None and runtime.recorder is not None:
            runtime.recorder.drain()


def _json(status: int, payload: Any) -> Response:
    return Response(status, orjson.dumps(payload), content_type=_JSON)


def _seconds(value: bytes) -> float | None:
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None
