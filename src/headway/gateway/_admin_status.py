"""The admin API's ``/api/status`` document: what every pool, endpoint and tenant is doing now.

Read-only and built on request from the live runtime (guards' own counters, the metrics'
sliding sketches), so producing it costs the data path nothing. Numbers that do not exist yet
(no request seen, metrics off) are ``null``, never a made-up zero or NaN (JSON has no NaN).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import orjson
from pydantic import SecretStr

from headway.config import GatewayConfig
from headway.observe import GatewayMetrics, read_totals

from ._runtime import Runtime
from ._upstreams import Pool

#: The latency quantiles the admin API reports.
QUANTILES = (0.5, 0.9, 0.99, 0.999)
_NAMES = ("p50", "p90", "p99", "p999")


def config_fingerprint(config: GatewayConfig) -> str:
    """A short, stable hash of a config's meaning (key order and formatting do not count; a
    changed secret does, through its digest, without the secret being readable from it)."""

    def default(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return "sha256:" + hashlib.sha256(value.get_secret_value().encode()).hexdigest()
        if isinstance(value, frozenset | set):
            return sorted(value)
        return str(value)

    data = orjson.dumps(config.model_dump(), default=default, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(data).hexdigest()[:16]


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _quantiles(values: list[float]) -> dict[str, float | None] | None:
    if all(math.isnan(v) for v in values):
        return None
    return {name: _number(v) for name, v in zip(_NAMES, values, strict=True)}


def _pool(pool: Pool, metrics: GatewayMetrics | None) -> dict[str, Any]:
    balancer = pool.balancer
    snap = balancer.snapshot()  # refreshes ejections and panic first
    endpoints = []
    for index, slot in enumerate(balancer.endpoints):
        ep = slot.payload
        qualified = ep.breaker.name
        s = slot.snapshot()
        breaker = ep.breaker.state.name.lower()
        if slot.drained:
            health = "drained"
        elif s["ejected"]:
            health = "ejected"
        elif breaker == "open":
            health = "breaker_open"
        else:
            health = "healthy"
        latency = (
            _quantiles(metrics.endpoint_latency_quantiles(qualified, QUANTILES))
            if metrics is not None
            else None
        )
        endpoints.append(
            {
                "name": slot.name,
                "id": f"ep{index}",
                "qualified": qualified,
                "health": health,
                "available": bool(s["available"]),
                "ejected": bool(s["ejected"]),
                "drained": slot.drained,
                "breaker": breaker,
                "limit": ep.limit.limit,
                "inflight": slot.outstanding,
                "weight": slot.weight,
                "ewma_ms": s["ewma_ms"],
                "requests": int(s["requests"]),
                "failures": int(s["failures"]),
                "times_ejected": int(s["times_ejected"]),
                "latency": latency,
            }
        )
    return {
        "name": pool.name,
        "balancer": pool.config.balancer,
        "panic": bool(snap["panic"]),
        "available": int(snap["available"]),
        "waiting": len(pool._waiters),
        "endpoints": endpoints,
    }


def _quota(limit: int | None, used: float | None) -> dict[str, Any] | None:
    if limit is None:
        return None
    return {"limit": limit, "used": None if used is None else round(used, 3)}


def _tenants(runtime: Runtime) -> list[dict[str, Any]]:
    guards = runtime.tenant_guards
    out = []
    for name, tenant in runtime.directory.tenants.items():
        rpm_used, tpm_used = guards.used(name)
        out.append(
            {
                "name": name,
                "priority": tenant.priority.name.lower(),
                "inflight": guards.inflight(name),
                "max_concurrency": tenant.max_concurrency,
                "rpm": _quota(tenant.rpm, rpm_used),
                "tpm": _quota(tenant.tpm, tpm_used),
            }
        )
    return out


def _traffic(runtime: Runtime, metrics: GatewayMetrics | None) -> dict[str, Any]:
    traffic: dict[str, Any] = {"metrics": metrics is not None, "inflight": runtime.inflight}
    if metrics is None:
        return traffic
    totals = read_totals(metrics.requests, metrics.duration, metrics.ttft)
    traffic.update(
        requests=int(totals.requests),
        errors=int(totals.errors),
        shed=int(totals.refused),
        latency=_quantiles(metrics.latency_quantiles(None, QUANTILES)),
    )
    return traffic


def status_document(
    runtime: Runtime, metrics: GatewayMetrics | None, config: dict[str, Any]
) -> dict[str, Any]:
    """Everything ``/api/status`` answers; ``config`` describes the config version in use."""
    return {
        "config": config,
        "traffic": _traffic(runtime, metrics),
        "admission": runtime.admission.snapshot(),
        "pools": [_pool(pool, metrics) for pool in runtime.pools.values()],
        "tenants": _tenants(runtime),
    }
