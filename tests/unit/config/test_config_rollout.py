"""The models' canary and shadow sections: defaults, and every mistake with its field path."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from headway.config import CanaryConfig, ConfigError, ShadowConfig, parse_config


def config(*models: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": 1,
        "sims": [
            {"name": "s1", "models": ["m"]},
            {"name": "s2", "models": ["m"]},
            {"name": "s3", "models": ["m-next"]},
        ],
        "pools": [
            {"name": "stable", "endpoints": [{"url": "sim://s1"}]},
            {"name": "copy", "endpoints": [{"url": "sim://s2"}]},
            {"name": "next", "endpoints": [{"url": "sim://s3"}]},
        ],
        "models": list(models),
    }


def errors(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml.safe_dump(data))
    return {issue.path: issue.message for issue in caught.value.errors}


def test_defaults_and_a_valid_section() -> None:
    model = {
        "name": "m",
        "pool": "stable",
        "canary": {"pool": "next", "upstream_model": "m-next", "sticky": "header:X-Conv-Id"},
        "shadow": {"pool": "next", "upstream_model": "m-next", "noise_pool": "copy"},
    }
    loaded = parse_config(yaml.safe_dump(config(model))).models[0]
    assert loaded.canary == CanaryConfig(
        pool="next", upstream_model="m-next", sticky="header:x-conv-id"
    )
    assert loaded.canary.weight == 0.0
    assert loaded.canary.override_header == "x-headway-canary"
    assert loaded.canary.fallback_to_stable is True
    assert isinstance(loaded.shadow, ShadowConfig)
    assert loaded.shadow.ignore_fields == ("id", "created", "system_fingerprint")
    assert loaded.shadow.sample == 1.0
    assert (
        parse_config(yaml.safe_dump(config({"name": "m", "pool": "stable"}))).models[0].canary
        is None
    )


def test_canary_mistakes_name_their_fields() -> None:
    found = errors(
        config(
            {
                "name": "m",
                "pool": "stable",
                "canary": {
                    "pool": "nope",
                    "weight": 101,
                    "sticky": "cookie",
                    "override_header": "a b",
                },
            },
            {"name": "m2", "pool": "stable", "upstream_model": "m", "canary": {"pool": "stable"}},
            {"name": "m3", "pool": "stable", "upstream_model": "m", "canary": {"pool": "next"}},
        )
    )
    assert found["models[0].canary.pool"].startswith(
        "unknown pool 'nope' (known: stable, copy, next)"
    )
    assert "less than or equal to 100" in found["models[0].canary.weight"]
    assert "'tenant', 'user' or 'header:<name>'" in found["models[0].canary.sticky"]
    assert "invalid header name" in found["models[0].canary.override_header"]
    assert "the model's own pool" in found["models[1].canary.pool"]
    assert "does not serve model 'm'" in found["models[2].canary.pool"]
    assert "set canary.upstream_model" in found["models[2].canary.pool"]


def test_shadow_mistakes_name_their_fields() -> None:
    found = errors(
        config(
            {
                "name": "m",
                "pool": "stable",
                "shadow": {
                    "pool": "copy",
                    "noise_pool": "copy",
                    "sample": 1.5,
                    "max_concurrency": 0,
                },
            },
            {
                "name": "m2",
                "pool": "stable",
                "upstream_model": "m",
                "shadow": {"pool": "ghost", "noise_pool": "next", "max_per_minute": 0},
            },
        )
    )
    assert "not the candidate pool 'copy'" in found["models[0].shadow.noise_pool"]
    assert "less than or equal to 1" in found["models[0].shadow.sample"]
    assert "greater than or equal to 1" in found["models[0].shadow.max_concurrency"]
    assert found["models[1].shadow.pool"].startswith("unknown pool 'ghost'")
    assert "does not serve model 'm'" in found["models[1].shadow.noise_pool"]
    assert "greater than 0" in found["models[1].shadow.max_per_minute"]
