from __future__ import annotations

import pytest

from headway.sim import FaultConfig, Faults
from headway.sim._faults import NO_FAULT


def test_no_faults_draws_nothing() -> None:
    faults = Faults(FaultConfig(), seed=1)
    assert all(faults.plan() is NO_FAULT for _ in range(100))
    assert faults.injected == 0


def test_same_seed_same_sequence() -> None:
    config = FaultConfig(error_rate=0.3, reset_rate=0.2, spike_rate=0.5, spike_seconds=1.0)
    a = [Faults(config, seed=7).plan() for _ in range(1)]
    one, two = Faults(config, seed=7), Faults(config, seed=7)
    seq_one = [one.plan() for _ in range(200)]
    assert seq_one == [two.plan() for _ in range(200)]
    assert a[0] == seq_one[0]
    errors = sum(1 for p in seq_one if p.error_status)
    assert 30 < errors < 90  # ~30% of 200
    reseeded = Faults(config, seed=0)
    reseeded.update({"seed": 7})
    assert [reseeded.plan() for _ in range(200)] == seq_one


def test_rate_one_always_applies() -> None:
    faults = Faults(
        FaultConfig(
            error_rate=1.0,
            error_status=503,
            error_retry_after=3.0,
            stall_rate=1.0,
            stall_after_chunks=4,
            stall_seconds=2.0,
        )
    )
    plan = faults.plan()
    assert (plan.error_status, plan.retry_after) == (503, 3.0)
    assert (plan.stall_after, plan.stall_seconds) == (4, 2.0)
    assert (plan.hang, plan.reset, plan.malformed_after) == (False, False, -1)
    assert faults.injected == 1


def test_update_validates_and_reset_restores() -> None:
    initial = FaultConfig(error_rate=0.5)
    faults = Faults(initial)
    assert faults.update({"hang_rate": 1, "error_status": 429}).hang_rate == 1.0
    assert isinstance(faults.config.hang_rate, float)
    for bad in (
        {"nope": 1},
        {"error_rate": 1.5},
        {"error_rate": "high"},
        {"error_status": 500.5},
        {"stall_seconds": -1},
        {"reset_rate": True},
        {"seed": "x"},
    ):
        with pytest.raises(ValueError):
            faults.update(bad)
    assert faults.config.error_status == 429  # failed updates changed nothing
    assert faults.reset() is initial
