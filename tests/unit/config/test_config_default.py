"""The embedded default: it loads, it is the published demo contract, and it ships in the
package byte-identical to examples/headway.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from headway.config import (
    DEFAULT_CONFIG_PATH,
    GatewayConfig,
    ServerLimits,
    hash_key,
    load_config,
    parse_config,
)
from headway.core import Priority
from headway.http import Limits
from headway.sim import FaultConfig, SimConfig

REPO = Path(__file__).resolve().parents[3]


def test_embedded_default_is_byte_identical_to_the_example() -> None:
    assert DEFAULT_CONFIG_PATH == REPO / "src" / "headway" / "config" / "default.yaml"
    assert DEFAULT_CONFIG_PATH.read_bytes() == (REPO / "examples" / "headway.yaml").read_bytes()


def test_none_loads_the_embedded_default_and_equals_the_example_file() -> None:
    assert load_config(None) == load_config(REPO / "examples" / "headway.yaml")
    assert load_config(None) == load_config(str(DEFAULT_CONFIG_PATH))


def test_default_is_the_published_demo_contract() -> None:
    config = load_config(None)
    assert config.version == 1
    assert config.server.listen_address == ("127.0.0.1", 8080)
    assert config.server.admin_address == ("127.0.0.1", 8081)
    assert config.state.url == "memory://"
    assert [m.name for m in config.models] == ["sim-small", "sim-large"]
    assert [s.name for s in config.sims] == [
        "small-a",
        "small-b",
        "large-a",
        "large-b",
        "large-next",
    ]
    small, large = config.model("sim-small"), config.model("sim-large")
    assert [e.url for e in config.pool(small.pool).endpoints] == ["sim://small-a", "sim://small-b"]
    assert [e.url for e in config.pool(large.pool).endpoints] == ["sim://large-a", "sim://large-b"]
    assert small.upstream == "small"
    assert large.upstream == "large"
    assert large.fallbacks == ("sim-small",)
    # sim-large's canary: a slightly worse next version, for the rollout demo.
    assert large.canary is not None
    assert (large.canary.pool, large.canary.weight, large.canary.sticky) == (
        "large-next",
        0,
        "user",
    )
    assert [e.url for e in config.pool("large-next").endpoints] == ["sim://large-next"]
    nxt, stable = config.sim("large-next"), config.sim("large-a")
    assert nxt.models == ("large",)
    assert nxt.ttft > stable.ttft
    assert 0 < nxt.faults.error_rate <= 0.05
    for name in ("small-a", "small-b"):
        assert config.sim(name).models == ("small",)
    for name in ("large-a", "large-b"):
        sim = config.sim(name)
        assert sim.models == ("large",)
        assert sim.ttft > config.sim("small-a").ttft
        assert sim.tokens_per_second < config.sim("small-a").tokens_per_second
        assert sim.capacity < config.sim("small-a").capacity


def test_default_tenants() -> None:
    config = load_config(None)
    free, pro = config.tenant("demo-free"), config.tenant("demo-pro")
    assert free.keys == (hash_key("sk-demo-free"),)
    assert pro.keys == (hash_key("sk-demo-pro"),)
    assert free.priority is Priority.SHEDDABLE
    assert pro.priority is Priority.CRITICAL
    assert (free.rpm, free.tpm, free.max_concurrency) == (60, 20000, 4)
    assert (pro.rpm, pro.tpm, pro.max_concurrency) == (6000, 2000000, 64)
    assert free.allows("sim-small")
    assert free.allows("sim-large")
    assert not free.allows("gpt-4")
    assert pro.models == ("*",)
    assert pro.allows("anything")


def test_spelled_out_values_equal_the_model_defaults() -> None:
    """Pool 'small' and model 'sim-small' claim to show every default: keep that true."""
    config = load_config(None)
    small = config.pool("small")
    pool = small.model_dump(exclude={"name", "endpoints"})
    defaults = GatewayConfig.model_validate(
        {"version": 1, "pools": [{"name": "p", "endpoints": [{"url": "http://h:1"}]}]}
    ).pools[0]
    assert pool == defaults.model_dump(exclude={"name", "endpoints"})
    assert small.endpoints[0].model_dump(exclude={"url"}) == defaults.endpoints[0].model_dump(
        exclude={"url"}
    )
    model = config.model("sim-small").model_dump(exclude={"name", "pool", "upstream_model"})
    bare = parse_config(
        "version: 1\nmodels: [{name: m, pool: p}]\npools: "
        "[{name: p, endpoints: [{url: 'http://h:1'}]}]"
    ).models[0]
    assert model == bare.model_dump(exclude={"name", "pool", "upstream_model"})
    assert config.server.limits == ServerLimits()


def test_sim_entries_map_to_sim_configs() -> None:
    sim = load_config(None).sim("large-b")
    assert sim.to_sim_config() == SimConfig(
        models=("large",),
        strict_models=True,
        ttft_base=0.25,
        ttft_per_prompt_token=0.0002,
        tokens_per_second=80.0,
        capacity=8,
        max_queue=None,
        default_output_tokens=64,
        embedding_dims=64,
        seed=3,
        faults=FaultConfig(),
    )


def test_server_limits_map_to_http_limits() -> None:
    limits = load_config(None).server.limits.to_http_limits()
    assert limits == Limits(write_high_water=65536)


def test_config_is_frozen() -> None:
    config = load_config(None)
    with pytest.raises(ValidationError):
        config.server.workers = 4  # type: ignore[misc]


def test_dump_round_trips_without_rehashing_keys() -> None:
    config = load_config(None)
    assert GatewayConfig.model_validate(config.model_dump()) == config


def test_sim_faults_mirror_the_simulator_fault_config() -> None:
    """The typed faults section must follow headway.sim.FaultConfig field for field."""
    from dataclasses import fields

    from headway.config import SimFaultsConfig

    assert list(SimFaultsConfig.model_fields) == [f.name for f in fields(FaultConfig)]
    assert SimFaultsConfig().to_fault_config() == FaultConfig()
