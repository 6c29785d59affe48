"""Flags in the gateway: ``models[].flag_route`` sends requests to another model by a flag's
variant, per tenant and per sticky targeting key; ``GET /api/flags`` reports what it served.

The sims answer with the upstream model they served (``large`` or ``large2``), which is how a
test tells which route a request took.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Callable
from typing import Any

from conftest import BASE_CONFIG, Running, make_config
from headway.rollout import bucket, percent_to_buckets

MESSAGES: Any = [{"role": "user", "content": "hello"}]
PERCENT = 30.0


def _config(rules: list[dict[str, Any]]) -> Any:
    return make_config(
        sims=[
            *BASE_CONFIG["sims"],
            {"name": "b2", "models": ["large2"], "ttft": 0.01, "tokens_per_second": 2000},
        ],
        pools=[*BASE_CONFIG["pools"], {"name": "large2", "endpoints": [{"url": "sim://b2"}]}],
        models=[
            BASE_CONFIG["models"][0],
            {
                **BASE_CONFIG["models"][1],
                "flag_route": {"flag": "large-v2", "variants": {"on": "sim-large-v2"}},
            },
            {"name": "sim-large-v2", "pool": "large2", "upstream_model": "large2"},
        ],
        tenants=[
            *BASE_CONFIG["tenants"],
            {"name": "team", "keys": ["sk-team"], "models": ["sim-large"]},
        ],
        flags=[
            {
                "name": "large-v2",
                "variants": {"on": True, "off": False},
                "default": "off",
                "rules": rules,
            }
        ],
    )


async def _served(running: Running, key: str, **extra: Any) -> str:
    reply = await running.client(key).chat.completions.create(
        model="sim-large", messages=MESSAGES, **extra
    )
    return reply.model


async def test_a_tenant_rule_routes_that_tenant_to_the_other_model(
    start_gateway: Callable[..., Any],
) -> None:
    running: Running = await start_gateway(_config([{"tenants": ["pro"], "variant": "on"}]))
    assert await _served(running, "sk-pro") == "large2"
    # 'team' may use only sim-large, yet is served there: access is checked on what was asked.
    assert await _served(running, "sk-team") == "large"
    snapshot = await asyncio.to_thread(_get, running.admin_url + "/api/flags")
    assert snapshot["routes"]["sim-large"] == {
        "flag": "large-v2",
        "variants": {"on": "sim-large-v2"},
        "served": {"on": 1, "off": 1},
    }
    assert [f["name"] for f in snapshot["flags"]] == ["large-v2"]
    assert running.gateway.runtime is not None
    assert running.gateway.runtime.flags.keys() == ["large-v2"]


async def test_a_percentage_rule_is_sticky_per_targeting_key(
    start_gateway: Callable[..., Any],
) -> None:
    running: Running = await start_gateway(
        _config([{"tenants": ["team"], "percentage": PERCENT, "variant": "on"}])
    )
    keys = [f"user-{i}" for i in range(24)]
    expected = {
        k: "large2" if bucket("large-v2", k) < percent_to_buckets(PERCENT) else "large"
        for k in keys
    }
    assert set(expected.values()) == {"large", "large2"}  # the sample covers both sides
    by_header = {
        k: await _served(running, "sk-team", extra_headers={"x-headway-targeting-key": k})
        for k in keys
    }
    assert by_header == expected
    # The OpenAI 'user' field is the targeting key when there is no header; answers repeat.
    for k in keys[:8]:
        assert await _served(running, "sk-team", user=k) == expected[k]
        assert await _served(running, "sk-team", user=k) == expected[k]
    # Without either, the tenant is the key: one answer for the whole tenant.
    assert len({await _served(running, "sk-team") for _ in range(4)}) == 1


async def test_a_reload_rebuilds_the_flags(start_gateway: Callable[..., Any]) -> None:
    running: Running = await start_gateway(_config([]))
    assert await _served(running, "sk-pro") == "large"
    await running.gateway.reload(_config([{"tenants": ["pro"], "variant": "on"}]))
    assert await _served(running, "sk-pro") == "large2"


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read())
