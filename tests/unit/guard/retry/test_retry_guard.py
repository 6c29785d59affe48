from __future__ import annotations

import asyncio

import pytest

from headway.core import (
    DeadlineExceeded,
    ManualClock,
    Overloaded,
    RateLimited,
    RecordingHooks,
    Stack,
    UpstreamError,
    request_context,
)
from headway.guard.retry import ExponentialBackoff, Retry, RetryBudget, RetryPolicy


class Flaky:
    """Fails with the given errors in order, then succeeds; records attempt times."""

    def __init__(self, clock: ManualClock, *errors: Exception) -> None:
        self.clock = clock
        self.errors = list(errors)
        self.times: list[float] = []

    async def __call__(self, request: str) -> str:
        self.times.append(self.clock.now())
        if self.errors:
            raise self.errors.pop(0)
        return "ok:" + request


def backoff_half() -> ExponentialBackoff:
    return ExponentialBackoff(random=lambda: 0.5)  # exact waits: 12.5 ms, 25 ms, 50 ms ...


async def run(clock: ManualClock, coro: object) -> object:
    task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
    while not task.done():
        await clock.advance(0.001)
    return task.result()


async def test_retries_retryable_errors_on_the_backoff_schedule(
    clock: ManualClock, hooks: RecordingHooks
) -> None:
    service = Flaky(clock, UpstreamError(status=503), ConnectionResetError())
    retry = Retry(backoff=backoff_half(), clock=clock, hooks=hooks, name="r")
    start = clock.now()
    assert await run(clock, retry.call(service, "x")) == "ok:x"
    assert [round(t - start, 6) for t in service.times] == [0.0, 0.0125, 0.0375]
    assert retry.snapshot() == {"calls": 1, "retries": 2, "budget_exhausted": 0, "gave_up": 0}
    assert hooks.events == [("retry", "r", "retry", 1), ("retry", "r", "retry", 2)]
    assert clock.pending_timers == 0


async def test_success_path_deposits_and_does_not_retry(clock: ManualClock) -> None:
    budget = RetryBudget(clock=clock)
    retry = Retry(budget=budget, clock=clock)
    service = Flaky(clock)
    assert await retry.call(service, "a") == "ok:a"
    assert budget.deposits == 1
    assert retry.retries == 0


@pytest.mark.parametrize(
    "error",
    [
        UpstreamError(status=400),
        ValueError("bad"),
        DeadlineExceeded(),
        RateLimited(retry_after=0.1),  # a rate limit refusal is not retryable by default
    ],
)
async def test_non_retryable_errors_are_raised_at_once(
    clock: ManualClock, error: Exception
) -> None:
    service = Flaky(clock, error)
    retry = Retry(clock=clock)
    with pytest.raises(type(error)) as info:
        await retry.call(service, "x")
    assert info.value is error
    assert len(service.times) == 1
    assert retry.snapshot() == {"calls": 1, "retries": 0, "budget_exhausted": 0, "gave_up": 0}


async def test_gives_up_after_max_attempts_with_last_error(clock: ManualClock) -> None:
    errors = [UpstreamError(f"e{i}", status=502) for i in range(5)]
    service = Flaky(clock, *errors)
    retry = Retry(max_attempts=3, backoff=backoff_half(), clock=clock)
    with pytest.raises(UpstreamError) as info:
        await run(clock, retry.call(service, "x"))
    assert info.value is errors[2]
    assert len(service.times) == 3
    assert retry.gave_up == 1


async def test_never_sleeps_past_the_deadline(clock: ManualClock) -> None:
    service = Flaky(clock, *[UpstreamError(status=503) for _ in range(5)])
    retry = Retry(
        max_attempts=10, backoff=ExponentialBackoff(0.1, 10, random=lambda: 1.0), clock=clock
    )
    start = clock.now()

    async def within_deadline() -> str:
        with request_context(deadline=start + 0.35, clock=clock):
            return await retry.call(service, "x")

    with pytest.raises(UpstreamError):
        await run(clock, within_deadline())
    # Waits 0.1 then 0.2 (ending at 0.3 < 0.35); the next 0.4 would pass the deadline.
    assert [round(t - start, 6) for t in service.times] == [0.0, 0.1, 0.3]
    assert retry.gave_up == 1
    assert clock.now() - start < 0.35


async def test_retry_after_hint_is_a_minimum_backoff(clock: ManualClock) -> None:
    service = Flaky(clock, Overloaded(retry_after=0.5, reason="overloaded"))
    retry = Retry(
        policy=RetryPolicy(predicate=lambda e: isinstance(e, Overloaded)),
        backoff=backoff_half(),
        clock=clock,
    )
    start = clock.now()
    assert await run(clock, retry.call(service, "x")) == "ok:x"
    assert [round(t - start, 6) for t in service.times] == [0.0, 0.5]


async def test_retry_after_that_does_not_fit_the_deadline_stops(clock: ManualClock) -> None:
    error = UpstreamError(status=429, retry_after=5.0)
    service = Flaky(clock, error)
    retry = Retry(clock=clock)
    with request_context(timeout=1.0, clock=clock), pytest.raises(UpstreamError):
        await retry.call(service, "x")
    assert len(service.times) == 1
    assert retry.gave_up == 1


async def test_a_retry_after_longer_than_the_cap_goes_back_to_the_caller(
    clock: ManualClock,
) -> None:
    # A breaker open for 30 s: waiting it out in-line would hold the request for 30 s.
    error = Overloaded(retry_after=30.0, reason="circuit_open")
    service = Flaky(clock, error)
    retry = Retry(policy=RetryPolicy(predicate=lambda e: True), clock=clock)
    start = clock.now()
    with request_context(timeout=600.0, clock=clock), pytest.raises(Overloaded) as info:
        await retry.call(service, "x")
    assert info.value is error
    assert clock.now() == start
    assert (len(service.times), retry.gave_up, retry.retries) == (1, 1, 0)


async def test_a_retry_after_within_the_cap_is_waited_out(clock: ManualClock) -> None:
    service = Flaky(clock, Overloaded(retry_after=3.0, reason="overloaded"))
    retry = Retry(policy=RetryPolicy(predicate=lambda e: True), max_retry_after=5.0, clock=clock)
    start = clock.now()
    with request_context(timeout=600.0, clock=clock):
        assert await run(clock, retry.call(service, "x")) == "ok:x"
    assert [round(t - start, 6) for t in service.times] == [0.0, 3.0]


def test_max_retry_after_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="max_retry_after"):
        Retry(max_retry_after=-1.0)


async def test_budget_exhaustion_reraises_and_reports(
    clock: ManualClock, hooks: RecordingHooks
) -> None:
    budget = RetryBudget(0.0, min_retries_per_second=0, clock=clock)
    error = UpstreamError(status=503)
    service = Flaky(clock, error)
    retry = Retry(budget=budget, clock=clock, hooks=hooks, name="r")
    with pytest.raises(UpstreamError) as info:
        await retry.call(service, "x")
    assert info.value is error
    assert retry.snapshot() == {"calls": 1, "retries": 0, "budget_exhausted": 1, "gave_up": 0}
    assert hooks.names() == ["budget_exhausted"]


async def test_full_outage_amplification_is_bounded(clock: ManualClock) -> None:
    """All attempts fail for 30 s: attempts <= (1 + ratio) * requests + floor * (span + ttl)."""
    ratio, floor, ttl = 0.2, 10.0, 10.0
    budget = RetryBudget(ratio, ttl=ttl, min_retries_per_second=floor, clock=clock)
    attempts = 0

    async def down(_: int) -> None:
        nonlocal attempts
        attempts += 1
        raise UpstreamError(status=503)

    retry = Retry(
        max_attempts=3, budget=budget, backoff=ExponentialBackoff(random=lambda: 0.0), clock=clock
    )
    requests = 0
    span = 30.0
    for _ in range(int(span / 0.1)):  # 200 requests per second for 30 s
        for _ in range(20):
            requests += 1
            with pytest.raises(UpstreamError):
                await retry.call(down, requests)
        clock.step(0.1)
    bound = (1 + ratio) * requests + floor * (span + ttl)
    assert attempts <= bound
    # Without the budget, 3 attempts each would give 3x; the budget holds it near 1.2x.
    assert attempts < 1.4 * requests
    assert retry.budget_exhausted > 0
    assert attempts == requests + retry.retries


async def test_shared_budget_across_guards(clock: ManualClock) -> None:
    budget = RetryBudget(0.0, ttl=10, min_retries_per_second=0.1, clock=clock)  # 1 retry total
    a = Retry(budget=budget, backoff=backoff_half(), clock=clock)
    b = Retry(budget=budget, backoff=backoff_half(), clock=clock)
    assert await run(clock, a.call(Flaky(clock, ConnectionError()), "1")) == "ok:1"
    with pytest.raises(ConnectionError):
        await b.call(Flaky(clock, ConnectionError()), "2")
    assert b.budget_exhausted == 1


async def test_as_decorator_and_as_layer(clock: ManualClock) -> None:
    retry = Retry(backoff=ExponentialBackoff(random=lambda: 0.0), clock=clock)
    calls: list[int] = []

    @retry
    async def fetch(n: int, *, suffix: str) -> str:
        calls.append(n)
        if len(calls) < 2:
            raise ConnectionRefusedError()
        return f"{n}{suffix}"

    assert await fetch(7, suffix="!") == "7!"
    assert calls == [7, 7]

    service = Stack(Retry(backoff=ExponentialBackoff(random=lambda: 0.0), clock=clock)).wrap(
        Flaky(clock, OSError())
    )
    assert await service("y") == "ok:y"


async def test_cancellation_is_not_retried(clock: ManualClock) -> None:
    retry = Retry(clock=clock)

    async def hang(_: None) -> None:
        await clock.sleep(100)

    task = asyncio.create_task(retry.call(hang, None))
    await clock.advance(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert retry.retries == 0


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(0)
    with pytest.raises(ValueError):
        Retry(max_attempts=2, policy=RetryPolicy())
