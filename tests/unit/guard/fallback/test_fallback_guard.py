from __future__ import annotations

import asyncio

import pytest

from headway.core import (
    CircuitOpen,
    DeadlineExceeded,
    ManualClock,
    RateLimited,
    RecordingHooks,
    Stack,
    UpstreamError,
    current_context,
    request_context,
)
from headway.guard.fallback import Fallback


def failing(error: BaseException):  # type: ignore[no-untyped-def]
    async def service(request: dict[str, str]) -> str:
        raise error

    return service


async def small_model(request: dict[str, str]) -> str:
    return "small:" + request["model"]


async def test_falls_back_on_rejection_and_records_reason(
    clock: ManualClock, hooks: RecordingHooks
) -> None:
    fallback = Fallback(small_model, clock=clock, hooks=hooks, name="fb")
    with request_context(clock=clock) as ctx:
        result = await fallback.call(failing(RateLimited(retry_after=1)), {"model": "big"})
        assert ctx.attributes["fallback"] == ["rate_limited"]
    assert result == "small:big"
    assert fallback.snapshot() == {"calls": 1, "fallbacks": 1, "fallback_failures": 0}
    assert hooks.events == [("fallback", "fb", "fallback.rate_limited", 1.0)]


async def test_transform_rewrites_request(clock: ManualClock) -> None:
    def smaller(request: dict[str, str], error: BaseException) -> dict[str, str]:
        return {**request, "model": "mini"}

    fallback = Fallback(small_model, transform=smaller, clock=clock)
    assert await fallback.call(failing(UpstreamError(status=503)), {"model": "big"}) == "small:mini"


async def test_success_does_not_touch_alternative(clock: ManualClock) -> None:
    async def primary(request: dict[str, str]) -> str:
        return "big"

    fallback = Fallback(small_model, clock=clock)
    with request_context(clock=clock) as ctx:
        assert await fallback.call(primary, {"model": "big"}) == "big"
        assert "fallback" not in ctx.attributes
    assert fallback.fallbacks == 0


@pytest.mark.parametrize("error", [ValueError("bug"), DeadlineExceeded()])
async def test_unchosen_errors_propagate(clock: ManualClock, error: Exception) -> None:
    fallback = Fallback(small_model, clock=clock)
    with pytest.raises(type(error)) as info:
        await fallback.call(failing(error), {"model": "big"})
    assert info.value is error
    assert fallback.fallbacks == 0


async def test_cancellation_never_falls_back(clock: ManualClock) -> None:
    fallback = Fallback(small_model, on=lambda e: True, clock=clock)

    async def hang(request: dict[str, str]) -> str:
        await clock.sleep(100)
        return "never"

    task = asyncio.create_task(fallback.call(hang, {"model": "big"}))
    await clock.advance(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fallback.fallbacks == 0


async def test_alternative_failure_chains_from_original(
    clock: ManualClock, hooks: RecordingHooks
) -> None:
    original = CircuitOpen(retry_after=5)
    second = UpstreamError("also down", status=502)
    fallback = Fallback(failing(second), clock=clock, hooks=hooks)
    with pytest.raises(UpstreamError) as info:
        await fallback.call(failing(original), {"model": "big"})
    assert info.value is second
    assert info.value.__cause__ is original
    assert fallback.snapshot() == {"calls": 1, "fallbacks": 1, "fallback_failures": 1}
    assert hooks.names() == ["fallback.circuit_open", "fallback_failed"]


async def test_custom_types_and_predicate(clock: ManualClock) -> None:
    by_type = Fallback(small_model, on=(KeyError,), clock=clock)
    assert await by_type.call(failing(KeyError("x")), {"model": "m"}) == "small:m"
    with pytest.raises(RateLimited):
        await by_type.call(failing(RateLimited()), {"model": "m"})

    by_status = Fallback(
        small_model,
        on=lambda e: isinstance(e, UpstreamError) and e.status == 404,
        clock=clock,
    )
    assert await by_status.call(failing(UpstreamError(status=404)), {"model": "m"}) == "small:m"
    with pytest.raises(UpstreamError):
        await by_status.call(failing(UpstreamError(status=500)), {"model": "m"})


async def test_no_fallback_after_deadline(clock: ManualClock) -> None:
    fallback = Fallback(small_model, clock=clock)

    async def slow_then_fail(request: dict[str, str]) -> str:
        clock.step(2)
        raise UpstreamError(status=503)

    with request_context(timeout=1, clock=clock), pytest.raises(UpstreamError):
        await fallback.call(slow_then_fail, {"model": "big"})
    assert fallback.fallbacks == 0


async def test_no_context_means_nothing_recorded_globally(clock: ManualClock) -> None:
    fallback = Fallback(small_model, clock=clock)
    await fallback.call(failing(RateLimited()), {"model": "big"})
    assert "fallback" not in current_context().attributes


async def test_as_decorator_and_layer(clock: ManualClock) -> None:
    async def alternative(request: tuple[tuple[object, ...], dict[str, object]]) -> str:
        args, _ = request
        return f"alt{args}"

    @Fallback(alternative, clock=clock)
    async def primary(x: int) -> str:
        raise UpstreamError(status=500)

    assert await primary(3) == "alt(3,)"
    service = Stack(Fallback(small_model, clock=clock)).wrap(failing(RateLimited()))
    with request_context(clock=clock) as ctx:
        assert await service({"model": "z"}) == "small:z"
        assert await service({"model": "z"}) == "small:z"
        assert ctx.attributes["fallback"] == ["rate_limited", "rate_limited"]
