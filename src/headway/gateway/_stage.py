"""Staged config rollout: a candidate config serves a sticky share of tenants before it becomes
a version.

A staged candidate is a second :class:`Runtime` built from a validated config text, next to the
live one. Each API request is authenticated against the live runtime's tenants and its tenant
hashed (``headway.rollout.bucket`` with the salt ``config-stage``, the same bucket-start rule as
canary splits, so raising the weight only moves tenants onto the candidate, never back and
forth); tenants in the first ``weight`` percent of buckets are served by the candidate, end to
end (its models, pools, guards and quotas settings; quota *state* is shared through the store).
Requests that fail authentication stay on the live runtime, which refuses them.

The candidate reuses the live gateway's in-process sims that it configures identically and
starts its own for sims it changes, so staging never disturbs what live traffic uses. Promoting
applies the candidate text as the next config version (which every instance then follows);
aborting drops it. Staging is per gateway process: other instances and workers keep serving the
current version until the promotion reaches them by polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from headway.config import GatewayConfig
from headway.observe import AccessLog
from headway.rollout import bucket, percent_to_buckets
from headway.sim import SimServer

from ._runtime import Runtime

if TYPE_CHECKING:
    from ._app import Gateway

__all__ = ["STAGE_SALT", "StagedConfig", "build_staged"]

#: The bucketing salt: one tenant order for every staged config (a tenant that was early on one
#: stage is early on the next, which keeps the blast radius on the same few, known tenants).
STAGE_SALT = "config-stage"


class StagedConfig:
    """A candidate config serving ``weight`` percent of tenants on this gateway."""

    def __init__(
        self,
        runtime: Runtime,
        sims: list[SimServer],
        *,
        text: str,
        sha256: str,
        weight: float,
        message: str,
        author: str,
    ) -> None:
        self.runtime = runtime
        self._sims = sims
        self.text = text
        self.sha256 = sha256
        self.message = message
        self.author = author
        self.started = time.time()
        self.weight = 0.0
        self._buckets = 0
        self.set_weight(weight)
        #: Requests routed to each side since staging began.
        self.candidate_requests = 0
        self.live_requests = 0

    def set_weight(self, weight: float) -> None:
        self._buckets = percent_to_buckets(weight)
        self.weight = weight

    def pick(self, headers: Mapping[bytes, bytes], live: Runtime) -> Runtime:
        """The runtime that serves a request with these headers."""
        try:
            tenant = live.directory.authenticate_headers(headers)
        except Exception:  # the live runtime refuses it with the proper error
            return live
        if bucket(STAGE_SALT, tenant.name) < self._buckets:
            self.candidate_requests += 1
            return self.runtime
        self.live_requests += 1
        return live

    def covers(self, tenant: str) -> bool:
        """Whether ``tenant`` is served by the candidate at the current weight."""
        return bucket(STAGE_SALT, tenant) < self._buckets

    def snapshot(self) -> dict[str, Any]:
        tenants = [t.name for t in self.runtime.config.tenants]
        return {
            "weight": self.weight,
            "sha256": self.sha256,
            "message": self.message,
            "author": self.author,
            "started": self.started,
            "candidate_requests": self.candidate_requests,
            "live_requests": self.live_requests,
            "candidate_tenants": [t for t in tenants if self.covers(t)],
        }

    async def retire(self, grace: float) -> None:
        """Stop serving: wait for its requests (up to ``grace`` s), close it, stop its sims."""
        with contextlib.suppress(Exception):
            await self.runtime.drained(grace)
        await self.runtime.aclose()
        for server in self._sims:
            await server.stop()


async def build_staged(
    gateway: Gateway,
    config: GatewayConfig,
    *,
    text: str,
    sha256: str,
    weight: float,
    message: str,
    author: str,
) -> StagedConfig:
    """A candidate runtime for ``config`` beside ``gateway``'s live one."""
    live_sims = gateway._sims
    urls: dict[str, str] = {}
    own: list[SimServer] = []
    try:
        for sim in config.sims:
            current = live_sims.get(sim.name)
            if current is not None and current[0] == sim:
                urls[sim.name] = current[1].base_url
                continue
            server = SimServer(sim.to_sim_config(), clock=gateway._clock, name=sim.name)
            await server.start("127.0.0.1", 0)
            own.append(server)
            urls[sim.name] = server.base_url
        observe = config.observe
        runtime = Runtime(
            config,
            urls,
            gateway._store,
            clock=gateway._clock,
            hooks=gateway._hooks_for(config),
            metrics=gateway.metrics if observe.metrics else None,
            access_log=(
                AccessLog(gateway._access_sink, models=[m.name for m in config.models])
                if observe.access_log
                else None
            ),
        )
    except BaseException:
        for server in own:
            with contextlib.suppress(Exception):
                await asyncio.shield(server.stop())
        raise
    return StagedConfig(
        runtime, own, text=text, sha256=sha256, weight=weight, message=message, author=author
    )
