"""JSON Schema export and the human-readable diff of two configs."""

from __future__ import annotations

import json
from typing import Any

import yaml

from headway.config import (
    DEFAULT_CONFIG_PATH,
    config_json_schema,
    diff_configs,
    load_config,
    parse_config,
)


def default_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    return data


def test_schema_is_json_and_describes_every_section() -> None:
    schema = config_json_schema()
    assert json.loads(json.dumps(schema)) == schema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "Headway gateway config"
    assert schema["required"] == ["version"]
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {
        "version",
        "server",
        "state",
        "admission",
        "observe",
        "sims",
        "pools",
        "models",
        "tenants",
        "slos",
        "flags",
    }
    defs = schema["$defs"]
    pool = defs["PoolConfig"]["properties"]
    assert pool["balancer"]["enum"] == ["p2c", "ewma", "prefix"]
    assert "least outstanding" in pool["balancer"]["description"]
    assert defs["TenantConfig"]["properties"]["priority"]["enum"] == [
        "sheddable",
        "default",
        "critical",
    ]
    assert defs["PoolTimeoutsConfig"]["properties"]["ttft"]["exclusiveMinimum"] == 0
    assert defs["EndpointConfig"]["properties"]["api_key"]["anyOf"][0]["writeOnly"] is True
    for name, definition in defs.items():
        assert definition["additionalProperties"] is False, name
        assert definition["description"], name
        for field, spec in definition["properties"].items():
            assert spec.get("description"), f"{name}.{field}"


def test_schema_defaults_match_the_models() -> None:
    defs = config_json_schema()["$defs"]
    assert defs["ServerConfig"]["properties"]["listen"]["default"] == "127.0.0.1:8080"
    assert defs["AdmissionConfig"]["properties"]["queue_target_delay"]["default"] == 0.05
    assert defs["TenantConfig"]["properties"]["priority"]["default"] == "default"


def test_identical_configs_have_no_diff() -> None:
    assert diff_configs(load_config(None), load_config(None)) == []


def test_diff_names_changed_paths_and_matches_entries_by_name() -> None:
    old = load_config(None)
    data = default_data()
    data["server"]["workers"] = 4
    data["pools"][0]["timeouts"]["ttft"] = 10.0
    data["pools"].reverse()  # order of named entries is not a change
    data["models"][1]["fallbacks"] = []
    data["models"][0]["hedge"] = {"delay": 2.0}
    data["tenants"][0]["priority"] = "default"
    data["tenants"].pop()
    data["tenants"].append({"name": "team-x", "keys": ["sk-x"]})
    data["sims"][0]["faults"] = {"error_rate": 0.5}
    new = parse_config(yaml.safe_dump(data))
    assert diff_configs(old, new) == [
        "server.workers: 1 -> 4",
        "sims['small-a'].faults.error_rate: 0.0 -> 0.5",
        "pools['small'].timeouts.ttft: 30.0 -> 10.0",
        "models['sim-small'].hedge: null -> {delay: 2.0, percentile: null, min_delay: 0.1}",
        "models['sim-large'].fallbacks: ['sim-small'] -> []",
        "tenants['demo-free'].priority: 'sheddable' -> 'default'",
        "tenants['team-x']: added",
        "tenants['demo-pro']: removed",
    ]


def test_diff_of_lists_that_become_empty_or_filled() -> None:
    old = parse_config("version: 1\n")
    new = load_config(None)
    changes = diff_configs(old, new)
    assert "pools['small']: added" in changes
    assert "tenants['demo-pro']: added" in changes
    assert diff_configs(new, old)[-1] == "tenants['demo-pro']: removed"
