"""Everything one config version builds: pools, routes, tenants, admission.

A :class:`Runtime` is immutable once built; a reload builds a new one and swaps it in, while
requests that started on the old one finish on it. Quota state lives in the store, which
outlives runtimes, so a reload never resets anybody's quota.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from headway.config import GatewayConfig
from headway.core import NO_HOOKS, REAL_CLOCK, Clock, Hooks, Priority
from headway.guard import LoadShedder
from headway.observe import AccessLog, GatewayMetrics, GatewayTracer, SloBook
from headway.rollout import FlagEvaluator
from headway.store import LimitStore

from ._flag_routes import build_flag_routes
from ._recorder import Recorder
from ._routes import ModelRoute
from ._shadow import build_shadows
from ._split import build_splits, carry_over
from ._tenants import ALL_MODELS, Tenant, TenantDirectory, TenantGuards
from ._upstreams import Pool


def _tenant(config: Any) -> Tenant:
    models = ALL_MODELS if "*" in config.models else frozenset(config.models)
    return Tenant(
        name=config.name,
        priority=Priority.parse(config.priority),
        rpm=config.rpm,
        tpm=config.tpm,
        max_concurrency=config.max_concurrency,
        allowed_models=models,
    )


class Runtime:
    """The data path built from one config version."""

    def __init__(
        self,
        config: GatewayConfig,
        sim_urls: dict[str, str],
        store: LimitStore,
        *,
        clock: Clock = REAL_CLOCK,
        hooks: Hooks = NO_HOOKS,
        metrics: GatewayMetrics | None = None,
        access_log: AccessLog | None = None,
        tracer: GatewayTracer | None = None,
        slos_before: SloBook | None = None,
    ) -> None:
        self.config = config
        #: Where this runtime's requests are counted (streams' timers, the recorder); None =
        #: ``observe.metrics`` off. The access log is only the recorder's business.
        self.metrics = metrics
        #: Spans per request (``observe.tracing``); None = no span is made.
        self.tracer = tracer
        #: The configured SLOs' burn rates (None: no SLO configured). ``slos_before`` is the
        #: live runtime's book, so an unchanged SLO keeps its history across a reload.
        self.slos = (
            SloBook([s.to_spec() for s in config.slos], clock=clock, previous=slos_before)
            if config.slos
            else None
        )
        # SLOs need every request's outcome even with metrics and the access log off.
        observed = (
            metrics is not None
            or access_log is not None
            or tracer is not None
            or self.slos is not None
        )
        #: Where observed requests' outcomes go (None: nothing observes them).
        self.recorder = (
            Recorder(
                clock=clock,
                metrics=metrics,
                access_log=access_log,
                slos=self.slos,
                tracing=tracer is not None,
                delay=config.observe.record_delay,
            )
            if observed
            else None
        )
        self.inflight = 0
        self._drained: asyncio.Event | None = None

        def resolve(url: str) -> str:
            if url.startswith("sim://"):
                return sim_urls[url[6:]]
            return url

        buffer = config.server.limits.stream_buffer_bytes
        # Upstream attempts are counted with the loop turn's batch (None: metrics off).
        attempts = None if metrics is None or self.recorder is None else self.recorder.attempt
        self.pools = {
            p.name: Pool(
                p,
                resolve,
                stream_buffer_bytes=buffer,
                clock=clock,
                hooks=hooks,
                on_attempt=attempts,
                tracer=tracer,
            )
            for p in config.pools
        }
        self.routes: dict[str, ModelRoute] = {}
        for model in config.models:
            self.routes[model.name] = ModelRoute(
                model, self.pools[model.pool], self.routes, clock=clock, hooks=hooks
            )
        # Rollouts: shadow mirrors behind routes, and canary splits a controller drives.
        self.shadows = build_shadows(config.models, self.routes, self.pools, clock=clock)
        self.splits = build_splits(
            config.models,
            self.routes,
            lambda m: ModelRoute(m, self.pools[m.pool], self.routes, clock=clock, hooks=hooks),
            clock=clock,
        )
        #: The config's feature flags, and the models whose requests a flag may re-route.
        self.flags = FlagEvaluator.from_config(config)
        self.flag_routes = build_flag_routes(config, self.routes, self.flags)
        tenants = [(_tenant(t), list(t.keys)) for t in config.tenants]
        self.directory = TenantDirectory(tenants)
        self.tenant_guards = TenantGuards([t for t, _ in tenants], store, clock=clock, hooks=hooks)
        a = config.admission
        self.admission = LoadShedder(
            a.max_inflight,
            max_queue=a.max_queue,
            target_delay=a.queue_target_delay,
            interval=a.queue_interval,
            name="admission",
            clock=clock,
            hooks=hooks,
        )
        s = config.server
        self.default_timeout = s.default_timeout
        self.max_timeout = s.max_timeout
        self.model_timeouts = {m.name: m.timeout for m in config.models if m.timeout}

    def enter(self) -> None:
        """A request started on this runtime."""
        self.inflight += 1

    def leave(self) -> None:
        """A request (or its stream) finished on this runtime."""
        self.inflight -= 1
        if self.inflight == 0 and self._drained is not None:
            self._drained.set()

    async def drained(self, grace: float) -> None:
        """Wait until no request is in flight here, for at most ``grace`` seconds."""
        if self.inflight == 0:
            return
        self._drained = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), grace)

    def observables(self) -> list[Any]:
        """Every guard of this runtime with ``kind``/``name``/``snapshot()`` (scrape-time
        gauges): admission, tenant quotas, and each pool's balancer, breakers, connection
        pools and adaptive limits."""
        out: list[Any] = [self.admission, self.tenant_guards]
        for pool in self.pools.values():
            out.extend(pool.observables())
        return out

    def snapshot(self) -> dict[str, Any]:
        return {
            "inflight": self.inflight,
            "admission": self.admission.snapshot(),
            "tenants": self.tenant_guards.snapshot(),
            "pools": [pool.snapshot() for pool in self.pools.values()],
        }

    def adopt(self, previous: Runtime) -> None:
        """Carry live rollout state (canary weights, sample windows) over from the runtime this
        one replaces."""
        carry_over(self.splits, previous.splits)

    async def aclose(self) -> None:
        for shadow in self.shadows.values():
            await shadow.aclose()
        for pool in self.pools.values():
            await pool.aclose()
