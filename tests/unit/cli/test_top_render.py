"""``headway top``'s frame from admin API documents: tables, sparklines, SLOs, colour."""

from __future__ import annotations

import time
from typing import Any

from headway.cli._top import render


def _status() -> dict[str, Any]:
    endpoint = {
        "name": "sim://a1",
        "health": "breaker_open",
        "breaker": "open",
        "inflight": 2,
        "limit": 10,
        "latency": {"p50": 0.012, "p90": 0.02, "p99": 1.5, "p999": 2.0},
        "requests": 12345,
        "failures": 7,
    }
    return {
        "config": {
            "hash": "abc",
            "schema_version": 1,
            "source": "x.yaml",
            "loaded_at": time.time(),
            "reloads": 2,
        },
        "traffic": {
            "metrics": True,
            "inflight": 2,
            "requests": 12345,
            "errors": 7,
            "shed": 3,
            "latency": {"p50": 0.012, "p90": 0.02, "p99": 1.5, "p999": 2.0},
        },
        "admission": {"queued": 1},
        "pools": [{"name": "small", "panic": True, "endpoints": [endpoint]}],
        "tenants": [
            {
                "name": "free",
                "priority": "sheddable",
                "inflight": 1,
                "max_concurrency": 4,
                "rpm": {"limit": 10, "used": 5.0},
                "tpm": None,
            },
        ],
    }


TIMELINE = {
    "samples": [
        {"rps": r, "error_rate": 0.0, "shed_rate": 0.0, "p99": p}
        for r, p in [(0.0, None), (5.0, 0.1), (10.0, 0.2)]
    ]
}
SLOS = {
    "slos": [
        {
            "name": "chat-availability",
            "kind": "availability",
            "objective": 99.9,
            "error_budget_remaining": 0.42,
            "windows": [{"window": "5m", "burn_rate": 14.4}],
            "firing": ["page"],
        },
    ]
}


def test_frame_has_every_section() -> None:
    frame = render(_status(), TIMELINE, SLOS, url="http://admin")
    assert "\x1b[" not in frame
    assert "config abc x.yaml" in frame
    assert "requests 12,345 total  10.0/s" in frame
    assert "p99 1.50s" in frame
    assert "req/s     ▁▅█" in frame
    assert "p99        ▅█" in frame  # a gap where no request was answered
    row = next(line for line in frame.splitlines() if "sim://a1" in line).split()
    assert row[:5] == ["small", "(panic)", "sim://a1", "breaker_open", "open"]
    assert row[-2:] == ["12345", "7"]
    tenant = next(line for line in frame.splitlines() if line.startswith("free"))
    assert "█████░░░░░ 5/10" in tenant
    assert "unlimited" in tenant
    assert "█" in tenant.split("unlimited")[1]  # concurrency 1/4
    slo = next(line for line in frame.splitlines() if line.startswith("chat-availability"))
    assert "99.9% availability" in slo
    assert "42.0%" in slo
    assert "5m:14.40x" in slo
    assert "FIRING page" in slo


def test_colour_marks_states() -> None:
    frame = render(_status(), TIMELINE, None, url="http://admin", color=True)
    assert "\x1b[31mopen" in frame  # the open breaker in red
    assert "SLO" not in frame  # no /api/slos: no section


def test_metrics_off_frame() -> None:
    status = _status()
    status["traffic"] = {"metrics": False, "inflight": 0}
    frame = render(status, {"samples": []}, None, url="http://admin")
    assert "metrics are off" in frame
    assert "sim://a1" in frame
