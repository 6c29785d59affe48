"""Test harness for the load-shedder tests: named requests that hold their slot until told."""

from __future__ import annotations

import asyncio

from headway.core import ManualClock, Overloaded, Priority, request_context
from headway.guard.shed import LoadShedder

D = Priority.DEFAULT


class Harness:
    """Runs named requests through ``async with shedder:``; each holds its slot until released."""

    def __init__(self, shedder: LoadShedder, clock: ManualClock) -> None:
        self.shedder = shedder
        self.clock = clock
        self.admitted: list[str] = []
        self.admitted_at: dict[str, float] = {}
        self.rejected: dict[str, Overloaded] = {}
        self.rejected_at: dict[str, float] = {}
        self.done: list[str] = []
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._gates: dict[str, asyncio.Event] = {}

    def start(
        self,
        key: str,
        priority: Priority = D,
        tenant: str | None = None,
        deadline: float | None = None,
    ) -> None:
        gate = self._gates[key] = asyncio.Event()

        async def run() -> None:
            with request_context(priority=priority, tenant=tenant, deadline=deadline):
                try:
                    async with self.shedder:
                        self.admitted.append(key)
                        self.admitted_at[key] = self.clock.now()
                        await gate.wait()
                except Overloaded as exc:
                    self.rejected[key] = exc
                    self.rejected_at[key] = self.clock.now()
                    return
            self.done.append(key)

        self.tasks[key] = asyncio.get_running_loop().create_task(run())

    async def arrive(self, *specs: tuple[str, Priority] | str, tenant: str | None = None) -> None:
        for spec in specs:
            key, priority = (spec, D) if isinstance(spec, str) else spec
            self.start(key, priority, tenant)
            await self.clock.advance(0)

    async def finish(self, key: str) -> None:
        self._gates[key].set()
        await self.clock.advance(0)

    def reasons(self) -> dict[str, str]:
        return {key: exc.reason for key, exc in self.rejected.items()}

    async def close(self) -> None:
        for gate in self._gates.values():
            gate.set()
        await self.clock.advance(0)
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        # Every rejection carried a usable retry hint.
        for exc in self.rejected.values():
            assert exc.retry_after is not None
            assert exc.retry_after > 0
        # No slot leaked, nothing left queued.
        assert self.shedder.inflight == 0
        assert self.shedder.queued == 0
