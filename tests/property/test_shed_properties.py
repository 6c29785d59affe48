"""LoadShedder invariants under random arrivals, completions, cancellations and time steps.

- in flight never exceeds the limit;
- every request ends admitted or rejected (none lost, none stuck once everything finishes), and
  no slot leaks;
- a critical request is never refused for capacity (queue full, queue delay, shed) while a
  sheddable one is queued. Deadline and tenant-cap refusals are per request, not a choice between
  priorities, and are left out of that rule.
"""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from headway.core import ManualClock, Overloaded, Priority, request_context
from headway.guard.shed import LoadShedder

_CAPACITY_REASONS = {"queue_full", "queue_delay", "shed"}

arrive = st.tuples(
    st.just("arrive"),
    st.sampled_from(list(Priority)),
    st.sampled_from(["A", "B", "C"]),
    st.one_of(st.none(), st.floats(0.001, 0.05)),
)
finish = st.tuples(st.just("finish"), st.integers(0, 50))
cancel = st.tuples(st.just("cancel"), st.integers(0, 50))
advance = st.tuples(st.just("advance"), st.floats(0.0, 0.03))
# Arrivals outnumber completions so the queue fills, evicts and stands long enough for CoDel.
ops = st.lists(
    st.one_of(arrive, arrive, arrive, finish, cancel, advance, advance), min_size=20, max_size=80
)


class _CheckingHooks:
    """Checks, at the instant of each refusal, that no critical request is refused for capacity
    while a sheddable one waits (events come as ``rejected.<reason>`` then ``shed.<priority>``)."""

    def __init__(self) -> None:
        self.shedder: LoadShedder | None = None
        self.reason = ""
        self.violations: list[tuple[str, float]] = []

    def on_event(self, kind: str, name: str, event: str, value: float = 1.0) -> None:
        if event.startswith("rejected."):
            self.reason = event.removeprefix("rejected.")
        elif event == "shed.critical" and self.reason in _CAPACITY_REASONS:
            assert self.shedder is not None
            waiting = self.shedder.snapshot()["queued_sheddable"]
            if waiting:
                self.violations.append((self.reason, waiting))


async def _scenario(
    operations: list[tuple[object, ...]], limit: int, max_queue: int, cap: int | None
) -> None:
    clock = ManualClock()
    hooks = _CheckingHooks()
    shedder = LoadShedder(
        limit,
        max_queue=max_queue,
        max_per_tenant=cap,
        target_delay=0.005,
        interval=0.02,
        clock=clock,
        hooks=hooks,
    )
    hooks.shedder = shedder
    gates: list[asyncio.Event] = []
    tasks: list[asyncio.Task[None]] = []
    outcome: dict[int, str] = {}
    retry_afters: list[float | None] = []

    async def request(i: int, priority: Priority, tenant: str, budget: float | None) -> None:
        with request_context(priority=priority, tenant=tenant, timeout=budget, clock=clock):
            try:
                async with shedder:
                    outcome[i] = "admitted"
                    assert shedder.inflight <= shedder.limit
                    await gates[i].wait()
            except Overloaded as exc:
                retry_afters.append(exc.retry_after)
                outcome[i] = "rejected:" + exc.reason
            except asyncio.CancelledError:
                outcome[i] = "cancelled"
                raise

    for op in operations:
        if op[0] == "arrive":
            _, priority, tenant, timeout = op
            i = len(tasks)
            gates.append(asyncio.Event())
            tasks.append(
                asyncio.create_task(request(i, priority, tenant, timeout))  # type: ignore[arg-type]
            )
            await clock.advance(0)
        elif op[0] == "finish" and tasks:
            gates[int(op[1]) % len(tasks)].set()  # type: ignore[call-overload]
            await clock.advance(0)
        elif op[0] == "cancel" and tasks:
            tasks[int(op[1]) % len(tasks)].cancel()  # type: ignore[call-overload]
            await clock.advance(0)
        elif op[0] == "advance":
            await clock.advance(float(op[1]))  # type: ignore[arg-type]
        assert shedder.inflight <= shedder.limit
        assert shedder.queued <= max_queue
    # Let everything finish: each request must come out admitted, rejected or cancelled.
    for gate in gates:
        gate.set()
    for _ in range(len(tasks) + 2):
        await clock.advance(0.05)
    await asyncio.gather(*tasks, return_exceptions=True)
    assert all(task.done() for task in tasks)
    assert set(outcome) <= set(range(len(tasks)))
    for i, task in enumerate(tasks):
        assert i in outcome or task.cancelled()
    assert shedder.inflight == 0
    assert shedder.queued == 0
    assert shedder._tenant_load in (None, {})
    assert all(r is not None and r > 0 for r in retry_afters)
    assert hooks.violations == []
    snap = shedder.snapshot()
    admitted = sum(1 for v in outcome.values() if v == "admitted")
    assert snap["admitted"] >= admitted


@settings(max_examples=150, deadline=None)
@given(
    operations=ops,
    limit=st.integers(1, 3),
    max_queue=st.integers(0, 4),
    cap=st.one_of(st.none(), st.integers(1, 4)),
)
def test_shedder_invariants(
    operations: list[tuple[object, ...]], limit: int, max_queue: int, cap: int | None
) -> None:
    asyncio.run(_scenario(operations, limit, max_queue, cap))
