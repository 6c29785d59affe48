"""Sequence-based properties of the circuit breaker, checked against a brute-force model."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from headway.core import ManualClock
from headway.guard.breaker import BreakerConfig, BreakerState, CircuitBreaker, WindowType

# (op, argument): acquire / finish the i-th held permit (ok, fail, slow) / release / step clock
ops = st.lists(
    st.one_of(
        st.tuples(st.just("acquire"), st.just(0)),
        st.tuples(st.sampled_from(["ok", "fail", "slow", "release"]), st.integers(0, 20)),
        st.tuples(st.just("step"), st.integers(1, 40)),  # tenths of a second
    ),
    max_size=150,
)


@settings(max_examples=150, deadline=None)
@given(
    window_type=st.sampled_from(list(WindowType)),
    window_size=st.integers(1, 6),
    min_calls=st.integers(1, 6),
    permitted=st.integers(1, 3),
    threshold=st.sampled_from([25.0, 50.0, 100.0]),
    script=ops,
)
def test_breaker_matches_model(
    window_type: WindowType,
    window_size: int,
    min_calls: int,
    permitted: int,
    threshold: float,
    script: list[tuple[str, int]],
) -> None:
    clock = ManualClock()
    config = BreakerConfig(
        window_type=window_type,
        window_size=window_size,
        minimum_number_of_calls=min_calls,
        permitted_calls_in_half_open=permitted,
        failure_rate_threshold=threshold,
        slow_call_rate_threshold=threshold,
        slow_call_duration=1.0,
        wait_duration_in_open=2.0,
    )
    b = CircuitBreaker("p", config, clock=clock)
    transitions: list[tuple[BreakerState, BreakerState]] = []
    b.on_state_change(lambda old, new: transitions.append((old, new)))
    # (permit, start, state when admitted, transitions seen when admitted)
    held: list[tuple[int, float, BreakerState, int]] = []
    # Outcomes recorded in the current CLOSED period: (time, failed, slow).
    closed_log: list[tuple[float, bool, bool]] = []
    effective_min = (
        min(min_calls, window_size) if window_type is WindowType.COUNT_BASED else min_calls
    )

    def in_window() -> list[tuple[float, bool, bool]]:
        if window_type is WindowType.COUNT_BASED:
            return closed_log[-window_size:]
        first = math.floor(clock.now()) - window_size + 1
        return [o for o in closed_log if math.floor(o[0]) >= first]

    for op, arg in script:
        state_before = b.state
        if op == "acquire":
            permit = b.try_acquire()
            if permit is not None:
                held.append((permit, clock.now(), b.state, len(transitions)))
        elif op == "step":
            clock.step(arg / 10)
        elif held:
            permit, start, admitted_in, seen = held.pop(arg % len(held))
            live_closed = admitted_in is BreakerState.CLOSED and seen == len(transitions)
            if op == "release":
                b.release(permit)
            else:
                duration = 2.0 if op == "slow" else 0.5
                clock.step(
                    duration - (clock.now() - start) if clock.now() - start < duration else 0
                )
                if op == "fail":
                    b.on_failure(permit, clock.now() - start)
                else:
                    b.on_success(permit, clock.now() - start)
                if live_closed:
                    closed_log.append((clock.now(), op == "fail", clock.now() - start > 1.0))

        # Never straight from OPEN to CLOSED.
        assert (BreakerState.OPEN, BreakerState.CLOSED) not in transitions
        entered_closed = transitions and transitions[-1][1] is BreakerState.CLOSED
        if entered_closed and state_before is not BreakerState.CLOSED:
            closed_log.clear()
        # Opening from CLOSED needs at least the minimum number of outcomes in the window.
        if state_before is BreakerState.CLOSED and b.state is BreakerState.OPEN:
            assert len(in_window()) >= effective_min
            closed_log.clear()
        # Half-open never has more probes out than permitted.
        if b.state is BreakerState.HALF_OPEN:
            probes = [
                h for h in held if h[2] is BreakerState.HALF_OPEN and h[3] == len(transitions)
            ]
            assert len(probes) <= permitted
        # The rates equal a brute-force recount of the window.
        if b.state is BreakerState.CLOSED:
            window = in_window()
            failures = sum(1 for o in window if o[1])
            slow = sum(1 for o in window if o[2])
            assert b.failure_rate == (failures * 100.0 / len(window) if window else 0.0)
            assert b.slow_call_rate == (slow * 100.0 / len(window) if window else 0.0)
