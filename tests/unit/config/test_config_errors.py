"""Every kind of mistake is reported with its field path, all of them in one ConfigError."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from headway.config import (
    DEFAULT_CONFIG_PATH,
    ConfigError,
    ConfigIssue,
    GatewayConfig,
    parse_config,
)


def default_data() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    return data


def issues_of(data: dict[str, Any] | str) -> list[tuple[str, str]]:
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    with pytest.raises(ConfigError) as caught:
        parse_config(text, env={})
    return [(issue.path, issue.message) for issue in caught.value.errors]


def only_issue(data: dict[str, Any] | str) -> tuple[str, str]:
    found = issues_of(data)
    assert len(found) == 1, found
    return found[0]


def test_five_mistakes_give_five_issues_each_with_its_path() -> None:
    data = default_data()
    data["server"]["workers"] = 0
    data["pools"][0]["balancr"] = "p2c"
    data["models"][1]["pool"] = "larg"
    data["tenants"][0]["priority"] = "urgent"
    data["pools"][1]["endpoints"][0]["url"] = "sim://nowhere"
    found = issues_of(data)
    assert [path for path, _ in found] == [
        "server.workers",
        "pools[0].balancr",
        "pools[1].endpoints[0].url",
        "models[1].pool",
        "tenants[0].priority",
    ]
    messages = dict(found)
    assert messages["server.workers"] == "Input should be greater than or equal to 1 (got 0)"
    assert messages["pools[0].balancr"] == "unknown field 'balancr' (did you mean 'balancer'?)"
    assert messages["models[1].pool"] == "unknown pool 'larg' (known: small, large, large-next)"
    assert messages["pools[1].endpoints[0].url"] == (
        "unknown sim 'nowhere' (known: small-a, small-b, large-a, large-b, large-next)"
    )
    assert messages["tenants[0].priority"] == (
        "unknown priority 'urgent'; expected one of sheddable, default, critical"
    )


def test_str_lists_every_issue_one_per_line_with_its_line_number() -> None:
    text = (
        DEFAULT_CONFIG_PATH.read_text()
        .replace("workers: 1", "workers: 0")
        .replace("pool: large\n", "pool: larg\n")
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="mine.yaml")
    error = caught.value
    assert error.source == "mine.yaml"
    lines = str(error).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("server.workers: Input should be greater than or equal to 1")
    assert lines[1].startswith(
        "models[1].pool: unknown pool 'larg' (known: small, large, large-next)"
    )
    workers_line = text.splitlines().index("  workers: 0") + 1
    assert error.errors[0].line == workers_line
    assert lines[0].endswith(f"(line {workers_line})")


def test_unknown_field_without_a_close_match_lists_the_known_ones() -> None:
    data = default_data()
    data["state"]["zzz"] = 1
    assert only_issue(data) == ("state.zzz", "unknown field 'zzz' (known: url, control_url)")


def test_missing_required_fields() -> None:
    data = default_data()
    del data["models"][0]["pool"]
    del data["tenants"][1]["keys"]
    assert issues_of(data) == [
        ("models[0].pool", "required field is missing"),
        ("tenants[1].keys", "required field is missing"),
    ]


def test_wrong_shapes_are_named_in_yaml_terms() -> None:
    data = default_data()
    data["models"][0]["fallbacks"] = "sim-large"
    data["pools"][0]["timeouts"] = 5
    assert issues_of(data) == [
        ("pools[0].timeouts", "expected a mapping"),
        ("models[0].fallbacks", "expected a list"),
    ]


@pytest.mark.parametrize(
    ("listen", "message"),
    [
        ("127.0.0.1:65536", "port must be an integer 0-65535, got '65536' in '127.0.0.1:65536'"),
        ("127.0.0.1", "expected 'host:port', got '127.0.0.1'"),
        ("::1:8080", "an IPv6 address must be bracketed, e.g. '[::1]:8080'; got '::1:8080'"),
        ("[::g]:80", "invalid IPv6 address '::g' in '[::g]:80'"),
        ("bad host:80", "invalid host 'bad host' in 'bad host:80'"),
        ("h:-1", "port must be an integer 0-65535, got '-1' in 'h:-1'"),
    ],
)
def test_bad_listen_addresses(listen: str, message: str) -> None:
    data = default_data()
    data["server"]["listen"] = listen
    assert only_issue(data) == ("server.listen", message)


@pytest.mark.parametrize("listen", ["[::1]:8080", "0.0.0.0:0", "localhost:65535", "[::]:80"])
def test_good_listen_addresses(listen: str) -> None:
    data = default_data()
    data["server"]["listen"] = listen
    assert parse_config(yaml.safe_dump(data)).server.listen == listen


def test_same_address_for_api_and_admin() -> None:
    data = default_data()
    data["server"]["admin_listen"] = "127.0.0.1:8080"
    assert only_issue(data) == (
        "server",
        "listen and admin_listen are the same address (127.0.0.1:8080)",
    )


def test_state_url_schemes() -> None:
    data = default_data()
    data["state"]["url"] = "postgres://db/1"
    assert only_issue(data) == (
        "state.url",
        "unsupported state scheme 'postgres' (expected one of: memory, redis, rediss)",
    )
    for good in ("redis://127.0.0.1:6379/0", "rediss://cache.internal:6380", "memory://"):
        data["state"]["url"] = good
        assert parse_config(yaml.safe_dump(data)).state.url == good
    data["state"]["url"] = "redis://h:6379/x"
    assert only_issue(data) == ("state.url", "redis database must be a number, got 'x'")


def test_endpoint_urls() -> None:
    data = default_data()
    endpoints = data["pools"][0]["endpoints"]
    endpoints[0]["url"] = "ftp://h"
    endpoints[1]["url"] = "http://h:99999"
    endpoints.append({"url": "https://user:pw@h/v1"})
    endpoints.append({"url": "http://10.0.0.1:8000/base"})  # valid: a base path
    assert issues_of(data) == [
        ("pools[0].endpoints[0].url", "unsupported scheme 'ftp' (expected http, https or sim)"),
        (
            "pools[0].endpoints[1].url",
            "port must be an integer 0-65535, got '99999' in 'h:99999'",
        ),
        (
            "pools[0].endpoints[2].url",
            "an upstream URL takes no query, fragment or credentials (put keys in api_key)",
        ),
    ]


def test_a_list_emptied_by_its_bad_items_reports_only_the_items() -> None:
    data = default_data()
    data["pools"][1]["endpoints"] = [{"url": "ftp://x"}]
    assert only_issue(data) == (
        "pools[1].endpoints[0].url",
        "unsupported scheme 'ftp' (expected http, https or sim)",
    )
    data["pools"][1]["endpoints"] = []
    assert only_issue(data) == ("pools[1].endpoints", "must not be empty")


def test_timeouts_must_be_positive_and_ttft_within_total() -> None:
    data = default_data()
    data["pools"][0]["timeouts"] = {"connect": 0, "ttft": 40, "total": 30}
    data["pools"][1]["timeouts"] = {"ttft": 40, "total": 30}
    data["server"]["default_timeout"] = 5000
    assert issues_of(data) == [
        ("server", "default_timeout (5000) must not exceed max_timeout (3600)"),
        ("pools[0].timeouts.connect", "Input should be greater than 0 (got 0)"),
        ("pools[1].timeouts", "ttft (40) must not exceed total (30)"),
    ]


def test_section_relations() -> None:
    data = default_data()
    data["pools"][0]["concurrency"] = {"initial": 2, "min": 4, "max": 200}
    data["pools"][0]["breaker"] = {"window": 10, "minimum_calls": 20}
    data["pools"][0]["outlier"] = {"base_ejection_seconds": 600}
    data["models"][0]["retries"] = {"backoff_base": 1.0, "backoff_cap": 0.5}
    data["models"][0]["hedge"] = {"delay": 1.0, "percentile": 0.9}
    data["models"][1]["hedge"] = {"min_delay": 1.0}
    data["admission"]["queue_target_delay"] = 1.0
    assert issues_of(data) == [
        ("admission", "queue_target_delay (1) must be smaller than queue_interval (0.5)"),
        (
            "pools[0].breaker",
            "minimum_calls (20) must not exceed window (10): the breaker could never open",
        ),
        (
            "pools[0].outlier",
            "base_ejection_seconds (600) must not exceed max_ejection_seconds (300)",
        ),
        ("pools[0].concurrency", "expected min <= initial <= max, got 4, 2, 200"),
        ("models[0].retries", "backoff_base (1) must not exceed backoff_cap (0.5)"),
        ("models[0].hedge", "give exactly one of 'delay' or 'percentile'"),
        ("models[1].hedge", "give exactly one of 'delay' or 'percentile'"),
    ]


def test_hedge_forms() -> None:
    data = default_data()
    data["models"][0]["hedge"] = {"delay": 2.0}
    data["models"][1]["hedge"] = {"percentile": 0.95, "min_delay": 0.5}
    config = parse_config(yaml.safe_dump(data))
    assert config.models[0].hedge is not None
    assert config.models[0].hedge.delay == 2.0
    assert config.models[1].hedge is not None
    assert (config.models[1].hedge.percentile, config.models[1].hedge.min_delay) == (0.95, 0.5)


def test_sim_faults_are_checked_field_by_field() -> None:
    data = default_data()
    data["sims"][0]["faults"] = {"error_rate": 1.5, "bogus": 1, "stall_after_chunks": -1}
    data["sims"][1]["faults"] = {"hang_rate": 0.5, "error_status": 503, "error_retry_after": 2}
    found = issues_of(data)
    assert found == [
        ("sims[0].faults.error_rate", "Input should be less than or equal to 1 (got 1.5)"),
        ("sims[0].faults.bogus", found[1][1]),
        (
            "sims[0].faults.stall_after_chunks",
            "Input should be greater than or equal to 0 (got -1)",
        ),
    ]
    assert found[1][1].startswith("unknown field 'bogus' (known: error_rate, error_status,")
    data["sims"][0]["faults"] = {}
    faults = parse_config(yaml.safe_dump(data)).sims[1].faults.to_fault_config()
    assert (faults.hang_rate, faults.error_status, faults.error_retry_after) == (0.5, 503, 2.0)


def test_duplicate_names_in_every_section() -> None:
    data = default_data()
    data["sims"].append(dict(data["sims"][0]))
    data["pools"].append(dict(data["pools"][0]))
    data["models"].append(dict(data["models"][0]))
    data["tenants"].append({"name": "demo-pro", "keys": ["sk-other"]})
    assert issues_of(data) == [
        ("sims[5].name", "duplicate sim name 'small-a' (first at sims[0])"),
        ("pools[3].name", "duplicate pool name 'small' (first at pools[0])"),
        ("models[2].name", "duplicate model name 'sim-small' (first at models[0])"),
        ("tenants[2].name", "duplicate tenant name 'demo-pro' (first at tenants[1])"),
    ]


def test_duplicate_endpoint_in_a_pool() -> None:
    data = default_data()
    data["pools"][0]["endpoints"][1]["url"] = "sim://small-a"
    assert only_issue(data) == (
        "pools[0].endpoints[1].url",
        "endpoint 'sim://small-a' is listed twice in this pool (first at "
        "pools[0].endpoints[0]); raise its weight",
    )


def test_sim_must_serve_the_upstream_model() -> None:
    data = default_data()
    data["models"][1]["upstream_model"] = "largest"
    assert issues_of(data) == [
        (
            "models[1].upstream_model",
            f"sim '{sim}' (pools[1].endpoints[{i}] of pool 'large') does not serve model "
            "'largest' (it serves: large)",
        )
        for i, sim in enumerate(("large-a", "large-b"))
    ] + [
        (  # the canary pool serves the same upstream model unless told otherwise
            "models[1].canary.pool",
            "sim 'large-next' (pools[2].endpoints[0] of pool 'large-next') does not serve "
            "model 'largest' (it serves: large); set canary.upstream_model",
        )
    ]


def test_upstream_model_defaults_to_the_name_and_is_checked_too() -> None:
    data = default_data()
    del data["models"][0]["upstream_model"]
    found = issues_of(data)
    assert [path for path, _ in found] == ["models[0].upstream_model"] * 2
    assert "does not serve model 'sim-small'" in found[0][1]
    data["sims"][0]["models"] = data["sims"][1]["models"] = ["small", "sim-small"]
    config = parse_config(yaml.safe_dump(data))
    assert config.models[0].upstream_model == "sim-small"
    assert config.models[0].upstream == "sim-small"


def test_fallback_references() -> None:
    data = default_data()
    data["models"][0]["fallbacks"] = ["sim-small", "sim-huge", "sim-large", "sim-large"]
    assert issues_of(data) == [
        ("models[0].fallbacks", "fallback cycle: sim-small -> sim-large -> sim-small"),
        ("models[0].fallbacks[0]", "a model cannot fall back to itself"),
        ("models[0].fallbacks[1]", "unknown model 'sim-huge' (known: sim-small, sim-large)"),
        ("models[0].fallbacks[3]", "'sim-large' is listed twice"),
    ]


def test_each_fallback_cycle_is_reported_once_with_its_shortest_path() -> None:
    data = default_data()
    models = data["models"]
    models[1]["fallbacks"] = []
    for name, fallbacks in (("c", ["d"]), ("d", ["e", "c"]), ("e", ["c"])):
        models.append(
            {"name": name, "pool": "small", "upstream_model": "small", "fallbacks": fallbacks}
        )
    models[0]["fallbacks"] = ["c"]  # leads into the cycle without being on it
    assert issues_of(data) == [("models[2].fallbacks", "fallback cycle: c -> d -> c")]


def test_tenant_models_must_exist() -> None:
    data = default_data()
    data["tenants"][0]["models"] = ["sim-small", "sim-medium", "*"]
    assert only_issue(data) == (
        "tenants[0].models[1]",
        "unknown model 'sim-medium' (known: sim-small, sim-large; '*' allows all)",
    )


def test_model_timeout_capped_by_server_max() -> None:
    data = default_data()
    data["models"][0]["timeout"] = 7200
    assert only_issue(data) == (
        "models[0].timeout",
        "timeout (7200) must not exceed server.max_timeout (3600)",
    )


def test_structural_and_reference_errors_are_reported_together() -> None:
    data = default_data()
    data["pools"][1]["endpoints"] = "oops"  # a broken pool still counts as declared
    data["models"][0]["pool"] = "nope"
    assert issues_of(data) == [
        ("pools[1].endpoints", "expected a list"),
        ("models[0].pool", "unknown pool 'nope' (known: small, large, large-next)"),
    ]


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("version: 1\nserver:\n  listen: [unclosed\n", 4, 1),
        ("version: 1\nserver:\n listen: a\n  workers: 2\n", 4, 10),
        ("version: 1\nmodels: [\n  {name: a, pool: b\n", 4, 1),
    ],
)
def test_yaml_syntax_errors_carry_line_and_column(text: str, line: int, column: int) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="x.yaml")
    (issue,) = caught.value.errors
    assert (issue.line, issue.column) == (line, column)
    assert issue.path == ""
    assert issue.message.startswith(f"YAML syntax error at line {line}, column {column}: ")


def test_a_key_written_twice_is_an_error() -> None:
    text = "version: 1\npools: []\nserver: {workers: 1, workers: 2}\npools: []\n"
    assert issues_of(text) == [
        ("", "line 3, column 22: key 'workers' appears twice in the same mapping"),
        ("", "line 4, column 1: key 'pools' appears twice in the same mapping"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the config is empty; start it with 'version: 1'"),
        ("# only a comment\n", "the config is empty; start it with 'version: 1'"),
        ("- version: 1\n", "expected a mapping at the top level, got a list"),
        ("just text\n", "expected a mapping at the top level, got a str"),
    ],
)
def test_not_a_mapping(text: str, message: str) -> None:
    assert only_issue(text) == ("", message)


def test_minimal_config_is_valid() -> None:
    config = parse_config("version: 1\n")
    assert (config.pools, config.models, config.tenants, config.sims) == ((), (), (), ())


def test_issue_str_forms() -> None:
    assert str(ConfigIssue("a.b", "bad")) == "a.b: bad"
    assert str(ConfigIssue("a.b", "bad", 3, 4)) == "a.b: bad (line 3)"
    assert str(ConfigIssue("", "line 1, column 2: broken", 1, 2)) == "line 1, column 2: broken"
    assert str(ConfigError([ConfigIssue("a", "x"), ConfigIssue("b", "y")])) == "a: x\nb: y"


def test_affinity_keys() -> None:
    data = default_data()
    data["pools"][0]["balancer"] = "prefix"
    data["pools"][0]["affinity"] = {"key": "header:X-Session-ID"}
    assert parse_config(yaml.safe_dump(data)).pools[0].affinity.key == "header:x-session-id"
    data["pools"][0]["affinity"] = {"key": "header:bad name"}
    assert only_issue(data) == ("pools[0].affinity.key", "invalid header name 'bad name'")
    data["pools"][0]["affinity"] = {"key": "session"}
    assert only_issue(data) == (
        "pools[0].affinity.key",
        "expected 'user', 'prompt_prefix' or 'header:<name>', got 'session'",
    )


def test_direct_model_validation_checks_references_too() -> None:
    data = default_data()
    data["models"][0]["pool"] = "larg"
    with pytest.raises(ValidationError) as caught:
        GatewayConfig.model_validate(data)
    assert "models[0].pool: unknown pool 'larg' (known: small, large, large-next)" in str(
        caught.value
    )
