"""``headway slo rules CONFIG``: Prometheus rules over the gateway's real metric names.

promtool is not installed here, so the rules are checked by parsing the YAML and comparing the
expressions; the metric names they read are checked against a real GatewayMetrics exposition.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from headway.cli import main
from headway.core import ManualClock
from headway.observe import GatewayMetrics, SloSpec, prometheus_rules

CONFIG = """
version: 1
observe: {metrics: true}
sims:
  - {name: s, models: [small]}
pools:
  - {name: p, endpoints: [{url: "sim://s"}]}
models:
  - {name: sim-small, pool: p, upstream_model: small}
slos:
  - name: chat-availability
    kind: availability
    objective: 99.9
    model: sim-small
    route: chat
  - name: fast
    kind: latency
    objective: 99
    threshold: 2
"""


def run(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> tuple[int, str, str]:
    path = tmp_path / "headway.yaml"
    path.write_text(text)
    code = main(["slo", "rules", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def rules_of(doc: dict[str, Any], group: str) -> list[dict[str, Any]]:
    [found] = [g for g in doc["groups"] if g["name"] == group]
    rules: list[dict[str, Any]] = found["rules"]
    return rules


def test_rules_for_one_availability_and_one_latency_slo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(tmp_path, capsys, CONFIG)
    assert code == 0, err
    doc = yaml.safe_load(out)
    assert [g["name"] for g in doc["groups"]] == [
        "headway-slo-chat-availability",
        "headway-slo-fast",
    ]
    avail = rules_of(doc, "headway-slo-chat-availability")
    records = [r for r in avail if "record" in r]
    alerts = [r for r in avail if "alert" in r]
    assert [r["record"] for r in records] == [
        f"headway:slo_errors_per_request:ratio_rate{w}"
        for w in ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
    ]
    assert all(r["labels"] == {"slo": "chat-availability"} for r in records)
    assert " ".join(records[0]["expr"].split()) == (
        'sum(rate(headway_requests_total{route="chat",model="sim-small",status=~"5.."}[5m])) / '
        'sum(rate(headway_requests_total{route="chat",model="sim-small",status!~"4.."}[5m]))'
    )
    assert [(a["labels"]["severity"], a["for"]) for a in alerts] == [
        ("page", "2m"),
        ("page", "15m"),
        ("ticket", "1h"),
        ("ticket", "3h"),
    ]
    page = alerts[0]
    assert page["alert"] == "HeadwaySLOErrorBudgetBurn"
    assert " ".join(page["expr"].split()) == (
        'headway:slo_errors_per_request:ratio_rate1h{slo="chat-availability"} >= (14.4 * 0.001) '
        "and "
        'headway:slo_errors_per_request:ratio_rate5m{slo="chat-availability"} >= (14.4 * 0.001)'
    )
    assert page["labels"] == {
        "severity": "page",
        "slo": "chat-availability",
        "long_window": "1h",
        "short_window": "5m",
    }
    assert "14.4x" in page["annotations"]["summary"]
    assert "2% of the 30d error budget" in page["annotations"]["description"]
    assert "sli_caveat" not in page["annotations"]  # availability is exact
    assert "(1 * 0.001)" in alerts[3]["expr"]

    latency = rules_of(doc, "headway-slo-fast")
    assert " ".join(latency[0]["expr"].split()) == (
        '1 - ( sum(rate(headway_request_duration_seconds_bucket{le="2.0"}[5m])) / '
        "sum(rate(headway_request_duration_seconds_count[5m])) )"
    )
    assert "(14.4 * 0.01)" in latency[7]["expr"]
    assert "no status label" in latency[7]["annotations"]["sli_caveat"]
    assert "note: SLO fast: the latency histogram has no status label" in err


def test_ttft_slo_reads_the_ttft_histogram_and_says_it_covers_every_route() -> None:
    spec = SloSpec("t", "latency", 99.0, model="m", route="chat", threshold=0.5, latency_of="ttft")
    [group] = prometheus_rules([spec])["groups"]
    expr = group["rules"][0]["expr"]
    assert 'headway_time_to_first_token_seconds_bucket{model="m",le="0.5"}[5m]' in expr
    assert 'headway_time_to_first_token_seconds_count{model="m"}[5m]' in expr
    caveat = group["rules"][-1]["annotations"]["sli_caveat"]
    assert "streamed answers only" in caveat
    assert "no route label" in caveat


def test_threshold_off_the_buckets_is_refused() -> None:
    with pytest.raises(ValueError, match="bucket bound"):
        prometheus_rules([SloSpec("t", "latency", 99.0, threshold=0.3)])


def test_label_values_are_escaped() -> None:
    spec = SloSpec("q", "availability", 99.0, model='we"ird\\')
    expr = prometheus_rules([spec])["groups"][0]["rules"][0]["expr"]
    assert 'model="we\\"ird\\\\"' in expr


def test_rules_read_metric_names_the_gateway_exposes() -> None:
    metrics = GatewayMetrics(models=["m"], clock=ManualClock())
    metrics.request("chat", "m", None, 200, "ok", 0.3)
    metrics.first_token("m", 0.1)
    exposed = {
        s.name
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
    }
    specs = [
        SloSpec("a", "availability", 99.0, model="m"),
        SloSpec("t", "latency", 99.0, threshold=1.0),
        SloSpec("f", "latency", 99.0, threshold=1.0, latency_of="ttft"),
    ]
    read: set[str] = set()
    for group in prometheus_rules(specs)["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                read |= set(re.findall(r"rate\((\w+)\{?", rule["expr"]))
    assert read == {
        "headway_requests_total",
        "headway_request_duration_seconds_bucket",
        "headway_request_duration_seconds_count",
        "headway_time_to_first_token_seconds_bucket",
        "headway_time_to_first_token_seconds_count",
    }
    assert read <= exposed


def test_bad_config_exits_non_zero_with_its_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(tmp_path, capsys, CONFIG.replace("threshold: 2", "threshold: 0.3"))
    assert code == 1
    assert out == ""
    assert "slos[1].threshold: must be a latency histogram bucket bound" in err


def test_config_without_slos_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(tmp_path, capsys, CONFIG.split("slos:")[0])
    assert code == 1
    assert out == ""
    assert "no SLOs configured" in err


def test_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["slo"]) == 2
    assert "usage: headway slo rules CONFIG" in capsys.readouterr().err
