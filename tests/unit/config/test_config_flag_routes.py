"""``models[].flag_route``: a flag's variants sending requests to other models, every mistake
reported at its exact field path."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from headway.config import ConfigError, parse_config

SIMS = [{"name": "a", "models": ["small", "large", "large2"]}]
POOLS = [{"name": "p", "endpoints": [{"url": "sim://a"}]}]
FLAG = {
    "name": "large-v2",
    "variants": {"on": True, "off": False},
    "default": "off",
    "rules": [{"tenants": ["pro"], "variant": "on"}],
}
TENANTS = [{"name": "pro", "keys": ["sk-pro-0123456789"], "models": ["*"]}]


def _config(models: list[dict[str, Any]], flags: list[dict[str, Any]] | None = None) -> str:
    data = {
        "version": 1,
        "sims": SIMS,
        "pools": POOLS,
        "models": models,
        "tenants": TENANTS,
        "flags": [FLAG] if flags is None else flags,
    }
    return yaml.safe_dump(data)


def _model(name: str, upstream: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "pool": "p", "upstream_model": upstream, **extra}


def test_a_valid_flag_route_parses() -> None:
    route = {"flag": "large-v2", "variants": {"on": "sim-large-v2"}}
    config = parse_config(
        _config([_model("sim-large", "large", flag_route=route), _model("sim-large-v2", "large2")])
    )
    flag_route = config.model("sim-large").flag_route
    assert flag_route is not None
    assert flag_route.flag == "large-v2"
    assert flag_route.variants == {"on": "sim-large-v2"}
    assert config.model("sim-large-v2").flag_route is None


def test_every_mistake_is_reported_at_its_path() -> None:
    models = [
        _model(
            "sim-large",
            "large",
            flag_route={
                "flag": "large-v2",
                "variants": {"on": "sim-nope", "off": "sim-large", "maybe": "sim-chained"},
            },
        ),
        _model(
            "sim-chained", "large2", flag_route={"flag": "ghost", "variants": {"x": "sim-large"}}
        ),
    ]
    with pytest.raises(ConfigError) as caught:
        parse_config(_config(models))
    found = {(issue.path, issue.message) for issue in caught.value.errors}
    assert found == {
        (
            "models[0].flag_route.variants.on",
            "unknown model 'sim-nope' (known: sim-large, sim-chained)",
        ),
        ("models[0].flag_route.variants.off", "a model cannot route to itself"),
        (
            "models[0].flag_route.variants.maybe",
            "flag 'large-v2' has no variant 'maybe' (known: off, on)",  # safe_dump sorts keys
        ),
        (
            "models[0].flag_route.variants.maybe",
            "model 'sim-chained' has a flag_route itself (one hop only)",
        ),
        ("models[1].flag_route.flag", "unknown flag 'ghost' (known: large-v2)"),
        (
            "models[1].flag_route.variants.x",
            "model 'sim-large' has a flag_route itself (one hop only)",
        ),
    }


def test_an_unquoted_yaml_boolean_variant_name_gets_the_hint() -> None:
    text = _config([_model("sim-large", "large"), _model("sim-large-v2", "large2")])
    text = text.replace(
        "  upstream_model: large\n",
        "  upstream_model: large\n  flag_route:\n    flag: large-v2\n    variants:\n"
        "      on: sim-large-v2\n",
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    messages = [str(issue) for issue in caught.value.errors]
    assert any("quote the name" in m and "flag_route" in m for m in messages), messages
