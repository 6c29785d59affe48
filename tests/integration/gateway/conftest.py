"""A real gateway on loopback (ephemeral ports) in front of real simulated upstreams, and the
official OpenAI client pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import openai
import pytest
import yaml

from headway.config import GatewayConfig, parse_config
from headway.gateway._app import Gateway

# Fast sims so real-time tests stay short: 10 ms to first token, 2000 tokens/s.
BASE_CONFIG: dict[str, Any] = {
    "version": 1,
    "server": {"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:1", "drain_timeout": 5},
    "sims": [
        {"name": "a1", "models": ["small"], "ttft": 0.01, "tokens_per_second": 2000, "seed": 1},
        {"name": "a2", "models": ["small"], "ttft": 0.01, "tokens_per_second": 2000, "seed": 2},
        {"name": "b1", "models": ["large"], "ttft": 0.01, "tokens_per_second": 2000, "seed": 3},
    ],
    "pools": [
        {
            "name": "small",
            "endpoints": [{"url": "sim://a1"}, {"url": "sim://a2"}],
            "timeouts": {"ttft": 2.0, "stall": 2.0, "total": 10.0},
            "breaker": {"minimum_calls": 5, "window": 10, "open_seconds": 30},
        },
        {"name": "large", "endpoints": [{"url": "sim://b1"}]},
    ],
    "models": [
        {"name": "sim-small", "pool": "small", "upstream_model": "small"},
        {"name": "sim-large", "pool": "large", "upstream_model": "large"},
    ],
    "tenants": [
        {"name": "pro", "keys": ["sk-pro"], "priority": "critical", "models": ["*"]},
        {
            "name": "free",
            "keys": ["sk-free"],
            "priority": "sheddable",
            "rpm": 3,
            "models": ["sim-small"],
        },
    ],
}


def make_config(**overrides: Any) -> GatewayConfig:
    """BASE_CONFIG with top-level sections replaced, validated like a file would be."""
    data = {**BASE_CONFIG, **overrides}
    return parse_config(yaml.safe_dump(data), source="<test>")


class Running:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.api_port}/v1"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.admin_port}"

    def client(self, key: str = "sk-pro", **options: Any) -> openai.AsyncOpenAI:
        options.setdefault("max_retries", 0)
        options.setdefault("timeout", 10.0)
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=key, **options)

    def sim(self, name: str) -> Any:
        return self.gateway._sims[name][1]


@pytest.fixture
async def start_gateway() -> AsyncIterator[Callable[..., Any]]:
    """``await start_gateway(config)``: a running gateway, stopped after the test."""
    started: list[Gateway] = []

    async def start(config: GatewayConfig | None = None) -> Running:
        gateway = Gateway(config or make_config())
        await gateway.start(api_port=0, admin_port=0)
        started.append(gateway)
        return Running(gateway)

    yield start
    for gateway in started:
        await gateway.stop(1.0)


@pytest.fixture
async def gw(start_gateway: Callable[..., Any]) -> Running:
    running: Running = await start_gateway()
    return running
