from __future__ import annotations

import pytest

from headway.core import (
    CircuitOpen,
    DeadlineExceeded,
    FanoutHooks,
    HeadwayError,
    Overloaded,
    RateLimited,
    RecordingHooks,
    Rejected,
    UpstreamError,
    UpstreamTimeout,
    retry_after_of,
)


def test_rejections_carry_reason_and_retry_after() -> None:
    err = RateLimited("quota", retry_after=1.5)
    assert isinstance(err, Rejected)
    assert isinstance(err, HeadwayError)
    assert err.reason == "rate_limited"
    assert retry_after_of(err) == 1.5
    shed = Overloaded("busy", retry_after=0.2, reason="shed")
    assert shed.reason == "shed"
    assert Overloaded().reason == "overloaded"
    assert not err.retryable
    assert CircuitOpen().retryable


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(None, True), (500, True), (503, True), (429, True), (400, False), (404, False)],
)
def test_upstream_error_is_retryable_by_status(status: int | None, retryable: bool) -> None:
    assert UpstreamError(status=status).retryable is retryable


def test_explicit_retryable_overrides_status() -> None:
    assert UpstreamError(status=400, retryable=True).retryable
    assert UpstreamTimeout("ttft").retryable


def test_deadline_exceeded_is_a_timeout_error_and_not_retryable() -> None:
    err = DeadlineExceeded()
    assert isinstance(err, TimeoutError)
    assert not err.retryable
    assert retry_after_of(err) is None


def test_fanout_delivers_each_event_to_every_target() -> None:
    a, b = RecordingHooks(), RecordingHooks()
    hooks = FanoutHooks(a, b)
    hooks.on_event("breaker", "ep1", "state.open")
    hooks.on_event("limit", "ep1", "limit", 12.0)
    for rec in (a, b):
        assert rec.events == [
            ("breaker", "ep1", "state.open", 1.0),
            ("limit", "ep1", "limit", 12.0),
        ]
        assert rec.names("breaker") == ["state.open"]
        assert rec.counts[("limit", "ep1", "limit")] == 1
