"""Secrets: ${ENV} expansion (set, missing, escaped) and API keys held only as hashes."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import yaml

from headway.config import DEFAULT_CONFIG_PATH, ConfigError, diff_configs, hash_key, parse_config


def default_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    return data


def dump(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def test_hash_key_is_sha256_hex() -> None:
    assert hash_key("sk-demo-free") == hashlib.sha256(b"sk-demo-free").hexdigest()
    assert len(hash_key("x")) == 64


def test_env_reference_replaced_whole_and_inside_strings() -> None:
    data = default_data()
    data["pools"][0]["endpoints"][0]["api_key"] = "${UPSTREAM_KEY}"
    data["server"]["listen"] = "${HOST}:${PORT}"
    data["tenants"][0]["keys"] = ["${FREE_KEY}"]
    data["tenants"][1]["rpm"] = "${PRO_RPM}"
    env = {
        "UPSTREAM_KEY": "up-secret",
        "HOST": "0.0.0.0",
        "PORT": "9000",
        "FREE_KEY": "k-free",
        "PRO_RPM": "120",
    }
    config = parse_config(dump(data), env=env)
    api_key = config.pools[0].endpoints[0].api_key
    assert api_key is not None
    assert api_key.get_secret_value() == "up-secret"
    assert config.server.listen_address == ("0.0.0.0", 9000)
    assert config.tenants[0].keys == (hash_key("k-free"),)
    assert config.tenants[1].rpm == 120


def test_upstream_api_key_is_hidden_in_repr_and_dump() -> None:
    data = default_data()
    data["pools"][0]["endpoints"][0]["api_key"] = "up-secret"
    config = parse_config(dump(data))
    assert "up-secret" not in repr(config)
    assert "up-secret" not in config.model_dump_json()


def test_every_missing_variable_is_named_with_its_path() -> None:
    data = default_data()
    data["pools"][0]["endpoints"][1]["api_key"] = "${UPSTREAM_KEY}"
    data["server"]["listen"] = "${HOST}:${PORT}"
    data["tenants"][1]["keys"] = ["sk-x", "${PRO_KEY}"]
    with pytest.raises(ConfigError) as caught:
        parse_config(dump(data), env={"PORT": "1"})
    assert [(i.path, i.message) for i in caught.value.errors] == [
        ("server.listen", "environment variable 'HOST' is not set"),
        ("pools[0].endpoints[1].api_key", "environment variable 'UPSTREAM_KEY' is not set"),
        ("tenants[1].keys[1]", "environment variable 'PRO_KEY' is not set"),
    ]


def test_missing_variable_in_a_validated_field_is_reported_once() -> None:
    data = default_data()
    data["state"]["url"] = "redis://${REDIS_HOST}:6379/0"
    with pytest.raises(ConfigError) as caught:
        parse_config(dump(data), env={})
    assert [(i.path, i.message) for i in caught.value.errors] == [
        ("state.url", "environment variable 'REDIS_HOST' is not set"),
    ]


def test_an_empty_variable_counts_as_set() -> None:
    data = default_data()
    data["pools"][0]["endpoints"][0]["api_key"] = "${EMPTY}"
    config = parse_config(dump(data), env={"EMPTY": ""})
    api_key = config.pools[0].endpoints[0].api_key
    assert api_key is not None
    assert api_key.get_secret_value() == ""


def test_double_dollar_escapes_a_literal_reference() -> None:
    data = default_data()
    data["pools"][0]["endpoints"][0]["api_key"] = "a$${NOT_A_VAR}b$$x"
    config = parse_config(dump(data), env={})
    api_key = config.pools[0].endpoints[0].api_key
    assert api_key is not None
    assert api_key.get_secret_value() == "a${NOT_A_VAR}b$$x"


def test_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEADWAY_TEST_KEY", "from-env")
    data = default_data()
    data["tenants"][0]["keys"] = ["${HEADWAY_TEST_KEY}"]
    assert parse_config(dump(data)).tenants[0].keys == (hash_key("from-env"),)


def test_keys_are_hashed_and_no_plaintext_is_kept() -> None:
    digest = hash_key("sk-pre-hashed")
    data = default_data()
    data["tenants"][0]["keys"] = ["sk-plain", f"sha256:{digest.upper()}"]
    config = parse_config(dump(data))
    assert config.tenants[0].keys == (hash_key("sk-plain"), digest)
    everything = repr(config) + config.model_dump_json() + str(config.model_dump())
    assert "sk-plain" not in everything
    assert "sk-demo-free" not in everything
    assert f"sha256:{hash_key('sk-plain')}" in config.model_dump_json()


def test_malformed_hashed_key_does_not_echo_the_entry() -> None:
    data = default_data()
    data["tenants"][0]["keys"] = ["sha256:secret-ish", ""]
    with pytest.raises(ConfigError) as caught:
        parse_config(dump(data))
    assert [(i.path, i.message) for i in caught.value.errors] == [
        ("tenants[0].keys[0]", "a hashed key must be 'sha256:' followed by 64 hex digits"),
        ("tenants[0].keys[1]", "an API key must not be empty"),
    ]
    assert "secret-ish" not in str(caught.value)


def test_the_same_key_in_two_tenants_after_hashing() -> None:
    data = default_data()
    data["tenants"][1]["keys"] = ["sk-demo-pro", f"sha256:{hash_key('sk-demo-free')}"]
    data["tenants"][0]["keys"] = ["sk-demo-free", "sk-demo-free"]
    with pytest.raises(ConfigError) as caught:
        parse_config(dump(data))
    assert [(i.path, i.message) for i in caught.value.errors] == [
        ("tenants[0].keys[1]", "the same API key is already used at tenants[0].keys[0]"),
        ("tenants[1].keys[1]", "the same API key is already used at tenants[0].keys[0]"),
    ]
    assert "sk-demo-free" not in str(caught.value)


def test_diff_never_shows_secrets() -> None:
    data = default_data()
    data["pools"][0]["endpoints"][0]["api_key"] = "old-secret"
    old = parse_config(dump(data))
    data["pools"][0]["endpoints"][0]["api_key"] = "new-secret"
    data["tenants"][0]["keys"] = ["sk-a", "sk-b"]
    new = parse_config(dump(data))
    assert diff_configs(old, new) == [
        "pools['small'].endpoints[0].api_key: (secret changed)",
        "tenants['demo-free'].keys: changed (1 -> 2 keys)",
    ]
