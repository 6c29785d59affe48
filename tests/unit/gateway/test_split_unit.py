"""A canary split on its own: side choice, live weight, per-side records and the fallback to
stable, with a manual clock and scripted routes standing in for pools."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from headway.config import ModelConfig
from headway.core import Context, ManualClock, UpstreamError, reset_context, set_context
from headway.gateway._errors import BadRequest
from headway.gateway._routes import ModelRoute, ProxyCall
from headway.gateway._split import TrafficSplit, carry_over
from headway.gateway._upstreams import Reply
from headway.rollout import bucket


class ScriptedRoute:
    """Takes ``delay`` seconds of the manual clock (stepped, nothing else runs meanwhile), then
    answers, or fails when told to."""

    def __init__(self, clock: ManualClock, delay: float, *, fail: bool = False) -> None:
        self.clock = clock
        self.delay = delay
        self.fail = fail
        self.calls = 0
        # What the split reads of the canary pool: endpoints available now.
        self.pool = SimpleNamespace(balancer=SimpleNamespace(healthy_count=1))

    async def service(self, call: Any) -> Reply:
        self.calls += 1
        self.clock.step(self.delay)
        if self.fail:
            raise UpstreamError("canary broke")
        return Reply(200, b"{}")


def make_split(
    clock: ManualClock,
    *,
    weight: float = 0.0,
    sticky: str = "tenant",
    canary_fails: bool = False,
    retries: dict[str, Any] | None = None,
) -> tuple[TrafficSplit, ScriptedRoute, ScriptedRoute]:
    model = ModelConfig.model_validate(
        {
            "name": "m",
            "pool": "stable",
            "retries": retries or {},
            "canary": {"pool": "next", "weight": weight, "sticky": sticky},
        }
    )
    stable = ScriptedRoute(clock, 0.1)
    canary = ScriptedRoute(clock, 0.3, fail=canary_fails)
    split = TrafficSplit(model, cast(ModelRoute, stable), cast(ModelRoute, canary), clock=clock)
    return split, stable, canary


def test_weight_zero_and_hundred_need_no_hash() -> None:
    split, _, _ = make_split(ManualClock())
    assert all(split.choose({}, f"t{i}", None) is split.stable for i in range(100))
    split.set_weight(100)
    assert all(split.choose({}, f"t{i}", None) is split.canary for i in range(100))


def test_sticky_keys_and_their_fallback_to_the_tenant() -> None:
    split, _, _ = make_split(ManualClock(), weight=50, sticky="user")
    for i in range(200):
        expected = split.canary if bucket("m", f"user:u{i}") < 5000 else split.stable
        assert split.choose({}, "tenant", f"u{i}") is expected
    no_user = "canary" if bucket("m", "tenant:acme") < 5000 else "stable"
    assert split.choose({}, "acme", None).name == no_user
    by_header, _, _ = make_split(ManualClock(), weight=50, sticky="header:x-conversation")
    for i in range(200):
        headers = {b"x-conversation": f"c{i}".encode()}
        expected = by_header.canary if bucket("m", f"header:c{i}") < 5000 else by_header.stable
        assert by_header.choose(headers, "acme", "ignored") is expected
    assert by_header.choose({}, "acme", None).name == no_user


def test_override_header() -> None:
    split, _, _ = make_split(ManualClock(), weight=0)
    assert split.choose({b"x-headway-canary": b"always"}, "t", None) is split.canary
    assert split.choose({b"x-headway-canary": b" Always "}, "t", None) is split.canary
    split.set_weight(100)
    assert split.choose({b"x-headway-canary": b"never"}, "t", None) is split.stable
    with pytest.raises(BadRequest, match="expected 'always' or 'never'"):
        split.choose({b"x-headway-canary": b"sometimes"}, "t", None)


def test_set_weight_validates() -> None:
    split, _, _ = make_split(ManualClock(), weight=5)
    assert split.weight == 5.0
    assert split.config_weight == 5.0
    split.set_weight(12.5)
    assert split.weight == 12.5
    for bad in (-1, 100.5, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            split.set_weight(bad)
    with pytest.raises(TypeError):
        split.set_weight(True)
    with pytest.raises(TypeError):
        split.set_weight(cast(Any, "50"))
    assert split.weight == 12.5


def call() -> ProxyCall:
    return cast(ProxyCall, object())


async def serve(split: TrafficSplit, side: str) -> tuple[Any, Context]:
    ctx = Context(tenant="t", attributes={})
    token = set_context(ctx)
    try:
        target = split.canary if side == "canary" else split.stable
        return await target.service(call()), ctx
    finally:
        reset_context(token)


async def test_sides_record_over_the_same_window() -> None:
    clock = ManualClock()
    split, _, _ = make_split(clock, weight=50)
    for _ in range(3):
        _, ctx = await serve(split, "stable")
        assert ctx.attributes["variant"] == "stable"
        assert split.stable.headers(ctx) == ((b"x-headway-variant", b"stable"),)
    _, ctx = await serve(split, "canary")
    assert ctx.attributes["variant"] == "canary"
    window = split.window()
    assert (window.start, window.end) == (1000.0, pytest.approx(1000.6))
    assert window.weight == 50
    assert window.stable.requests == 3
    assert window.stable.errors == 0
    assert window.stable.latencies == pytest.approx([0.1, 0.1, 0.1])
    assert window.stable.ttfts == pytest.approx([0.1, 0.1, 0.1])
    assert window.canary.requests == 1
    assert window.canary.latencies == pytest.approx([0.3])
    following = split.drain_samples()
    assert following.start == window.end
    assert following.stable.requests == 0


async def test_a_failed_canary_request_is_served_on_stable_within_the_budget() -> None:
    clock = ManualClock()
    # No floor: the budget is 20% of canary requests, one fallback per five.
    retries = {"budget_percent": 20, "min_retries_per_second": 0}
    split, stable, canary = make_split(clock, weight=100, canary_fails=True, retries=retries)
    served = failed = 0
    for _ in range(10):
        try:
            _, ctx = await serve(split, "canary")
        except UpstreamError:
            failed += 1
        else:
            served += 1
            assert ctx.attributes["variant"] == "stable"
            assert ctx.attributes["fallback"] == ["canary_failed"]
            assert split.canary.headers(ctx) == ((b"x-headway-variant", b"stable"),)
    assert (served, failed) == (2, 8)
    assert canary.calls == 10
    assert stable.calls == 2
    window = split.window()
    # Every failure is the canary's, and the rescues are no stable samples.
    assert (window.canary.requests, window.canary.errors) == (10, 10)
    assert window.canary.latencies == []
    assert window.stable.requests == 0
    assert split.snapshot()["fallbacks"] == 2


async def test_no_fallback_when_disabled() -> None:
    clock = ManualClock()
    model = ModelConfig.model_validate(
        {"name": "m", "pool": "s", "canary": {"pool": "n", "fallback_to_stable": False}}
    )
    stable = ScriptedRoute(clock, 0.1)
    split = TrafficSplit(
        model,
        cast(ModelRoute, stable),
        cast(ModelRoute, ScriptedRoute(clock, 0.1, fail=True)),
        clock=clock,
    )
    with pytest.raises(UpstreamError):
        await serve(split, "canary")
    assert stable.calls == 0


async def test_a_reload_keeps_the_live_weight_and_windows_unless_the_section_changed() -> None:
    clock = ManualClock()
    old, _, _ = make_split(clock, weight=5)
    old.set_weight(40)
    await serve(old, "canary")
    new, _, _ = make_split(clock, weight=5)
    carry_over({"m": new}, {"m": old})
    assert new.weight == 40
    assert new.window().canary.requests == 1
    changed, _, _ = make_split(clock, weight=10)
    carry_over({"m": changed}, {"m": old})
    assert changed.weight == 10


async def test_a_canary_with_no_available_endpoint_is_skipped_for_stable() -> None:
    clock = ManualClock()
    split, stable, canary = make_split(clock, weight=100)
    canary.pool.balancer.healthy_count = 0
    _, ctx = await serve(split, "canary")
    assert ctx.attributes["variant"] == "stable"
    assert ctx.attributes["fallback"] == ["canary_unavailable"]
    assert (canary.calls, stable.calls) == (0, 1)
    assert split.snapshot()["canary_unavailable"] == 1
    window = split.window()
    assert window.canary.requests == 0
    assert window.stable.requests == 0


class Controller:
    def __init__(self, weight: float) -> None:
        self.weight = weight

    def current_weight(self) -> float:
        return self.weight


def test_following_a_controller_reads_its_weight_on_every_request() -> None:
    split, _, _ = make_split(ManualClock(), weight=0)
    controller = Controller(100)
    split.follow(controller)
    assert split.weight == 100
    assert split.choose({}, "t", None) is split.canary
    controller.weight = 0  # an abort: the very next request is stable's
    assert split.choose({}, "t", None) is split.stable
    controller.weight = 250  # out of range: clamped, never an error on the request path
    assert split.choose({}, "t", None) is split.canary
    assert split.snapshot()["following"] is True
    renewed, _, _ = make_split(ManualClock(), weight=0)
    carry_over({"m": renewed}, {"m": split})
    controller.weight = 100
    assert renewed.choose({}, "t", None) is renewed.canary
    split.follow(None)
    assert split.weight == 0
