"""Pieces of the admin API's status document: quota usage, per-endpoint latency sketches and
the config fingerprint."""

from __future__ import annotations

import math

import pytest
import yaml

from headway.config import GatewayConfig, parse_config
from headway.core import ManualClock
from headway.gateway._admin_status import config_fingerprint
from headway.gateway._tenants import Tenant, TenantGuards
from headway.observe import GatewayMetrics
from headway.store import MemoryStore


def test_quota_usage_is_the_gcra_level_and_drains(clock: ManualClock) -> None:
    tenant = Tenant("t", rpm=60, tpm=6000)
    guards = TenantGuards([tenant], MemoryStore(clock=clock), clock=clock)
    assert guards.used("t") == (0.0, 0.0)
    for _ in range(3):
        guards.admit_nowait(tenant, 100).settle_nowait(None)
    rpm, tpm = guards.used("t")
    assert rpm == pytest.approx(3.0)
    assert tpm == pytest.approx(300.0)
    clock.step(1.0)  # 60 per minute drain one request and 100 tokens a second
    rpm, tpm = guards.used("t")
    assert rpm == pytest.approx(2.0)
    assert tpm == pytest.approx(200.0)
    clock.step(60.0)
    assert guards.used("t") == (0.0, 0.0)


def test_quota_usage_of_unlimited_or_unknown_tenants_is_none(clock: ManualClock) -> None:
    free = Tenant("free")
    guards = TenantGuards([free], MemoryStore(clock=clock), clock=clock)
    assert guards.used("free") == (None, None)
    assert guards.used("nobody") == (None, None)


def test_endpoint_latency_quantiles_per_endpoint(clock: ManualClock) -> None:
    metrics = GatewayMetrics(endpoints=["p/a", "p/b"], clock=clock)
    for ms in range(1, 101):
        metrics.upstream("p/a", 200, ms / 1000)
    metrics.upstream("p/b", 0, 2.0)
    p50, p90, p99, p999 = metrics.endpoint_latency_quantiles("p/a")
    assert p50 == pytest.approx(0.050, rel=0.02)
    assert p90 == pytest.approx(0.090, rel=0.02)
    assert p99 == pytest.approx(0.099, rel=0.02)
    assert p999 == pytest.approx(0.100, rel=0.02)
    assert metrics.endpoint_latency_quantiles("p/b", (0.5,)) == [pytest.approx(2.0)]
    assert all(math.isnan(v) for v in metrics.endpoint_latency_quantiles("p/none"))
    clock.step(120.0)  # past the sliding window: nothing is reported as current
    assert all(math.isnan(v) for v in metrics.endpoint_latency_quantiles("p/a"))


def _config(**server: object) -> GatewayConfig:
    data = {"version": 1, "server": {"listen": "127.0.0.1:8080", **server}}
    return parse_config(yaml.safe_dump(data), source="<test>")


def test_config_fingerprint_follows_meaning_and_secrets() -> None:
    base = config_fingerprint(_config())
    assert len(base) == 16
    assert config_fingerprint(_config()) == base
    changed = config_fingerprint(_config(workers=2))
    assert changed != base
    one = config_fingerprint(_config(admin_token="a" * 20))
    two = config_fingerprint(_config(admin_token="b" * 20))
    assert one != two  # a rotated secret is a new version
    assert "a" * 20 not in one
