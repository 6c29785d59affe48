from __future__ import annotations

import pytest

from headway.core import ManualClock
from headway.guard.retry import RetryBudget


def test_ratio_without_floor(clock: ManualClock) -> None:
    budget = RetryBudget(0.2, min_retries_per_second=0, clock=clock)
    for _ in range(100):
        budget.deposit()
    assert budget.balance == 20
    assert sum(budget.try_withdraw() for _ in range(25)) == 20
    assert budget.balance == 0
    assert budget.snapshot() == {"balance": 0, "deposits": 100, "withdrawals": 20, "refused": 5}


def test_floor_is_min_retries_per_second_times_ttl(clock: ManualClock) -> None:
    budget = RetryBudget(clock=clock)  # Finagle defaults: 0.2, 10/s, 10 s
    assert budget.balance == 100
    for _ in range(50):
        budget.deposit()
    assert budget.balance == 110
    assert sum(budget.try_withdraw() for _ in range(200)) == 110


def test_fractional_ratio_accumulates_exactly(clock: ManualClock) -> None:
    budget = RetryBudget(0.1, min_retries_per_second=0, clock=clock)
    for _ in range(9):
        budget.deposit()
    assert not budget.try_withdraw()
    budget.deposit()
    assert budget.try_withdraw()
    assert not budget.try_withdraw()


def test_deposits_and_withdrawals_expire_after_ttl(clock: ManualClock) -> None:
    # ttl 10 s in 10 slices of 1 s: an entry made in slice k expires when slice k+10 begins.
    budget = RetryBudget(0.5, ttl=10, min_retries_per_second=0, clock=clock)
    for _ in range(4):
        budget.deposit()  # +2 retries, in slice 0 (t = 1000.0)
    clock.step(5)
    assert budget.try_withdraw()  # slice 5
    assert budget.balance == 1
    clock.step(4.999)  # t = 1009.999: slice 0 still live
    assert budget.balance == 1
    clock.step(0.001)  # t = 1010: slice 0 expires, its deposits go; slice 5's withdrawal stays
    assert budget.balance == -1
    assert not budget.try_withdraw()
    clock.step(5)  # slice 5 expires too
    assert budget.balance == 0


def test_withdrawals_expire_so_floor_refills(clock: ManualClock) -> None:
    budget = RetryBudget(0.2, ttl=10, min_retries_per_second=1, clock=clock)
    assert sum(budget.try_withdraw() for _ in range(20)) == 10
    clock.step(9.999)
    assert not budget.try_withdraw()
    clock.step(0.001)
    assert budget.balance == 10


def test_long_idle_gap_clears_everything(clock: ManualClock) -> None:
    budget = RetryBudget(1.0, min_retries_per_second=0, clock=clock)
    budget.deposit()
    clock.step(1000)
    assert budget.balance == 0


@pytest.mark.parametrize(("ratio", "floor"), [(0.2, 10.0), (0.1, 0.0), (0.2, 1.0)])
def test_sliding_window_never_exceeds_ratio_plus_reserve(
    clock: ManualClock, ratio: float, floor: float
) -> None:
    """In any ttl-long run of slices, retries <= ratio * requests in the live window + reserve."""
    ttl = 10.0
    budget = RetryBudget(ratio, ttl=ttl, min_retries_per_second=floor, clock=clock)
    granted: list[int] = []
    requests: list[int] = []
    # 60 s at 7 requests per 0.25 s, each request failing and asking for a retry.
    for _ in range(240):
        req = 0
        ok = 0
        for _ in range(7):
            budget.deposit()
            req += 1
            ok += budget.try_withdraw()
        requests.append(req)
        granted.append(ok)
        clock.step(0.25)
    window = int((ttl - ttl / 10) / 0.25)  # ticks an entry is surely still live
    for end in range(window, len(granted) + 1):
        retries = sum(granted[end - window : end])
        reqs = sum(requests[end - window - 4 if end >= window + 4 else 0 : end])
        assert retries <= ratio * reqs + floor * ttl + 1e-9


def test_validation() -> None:
    with pytest.raises(ValueError):
        RetryBudget(-0.1)
    with pytest.raises(ValueError):
        RetryBudget(ttl=0)
