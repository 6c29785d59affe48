"""The waiting room of the load shedder: strict priority between levels, round-robin between
tenants within a level, FIFO within a tenant.

Guarantees: :meth:`FairQueue.pop` returns a waiter of the highest non-empty priority; within a
priority, tenants with waiters take turns (one waiter per turn, in the order they joined the
rotation), so a tenant with 100 waiters and one with 2 alternate instead of queueing behind each
other. Arrival order inside each priority is kept too, so the newest waiter of a level (the one to
evict) and the oldest (the one that has waited longest) are found in O(1). Pure data structure:
no clock, no asyncio.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar


class QueuedRequest:
    """What the queue needs to know about a waiter; the shedder subclasses it."""

    def __init__(self, priority: int, tenant: Hashable, enqueued_at: float) -> None:
        self.priority = priority
        self.tenant = tenant
        self.enqueued_at = enqueued_at


W = TypeVar("W", bound=QueuedRequest)


class _Level(Generic[W]):
    def __init__(self) -> None:
        # Insertion-ordered dict as an ordered set: O(1) removal anywhere, oldest and newest
        # at the ends.
        self.order: dict[W, None] = {}
        self.tenants: dict[Hashable, deque[W]] = {}
        # Tenants with waiters, in turn order.
        self.rotation: deque[Hashable] = deque()


class FairQueue(Generic[W]):
    """Waiters by priority level (``0 .. levels-1``, higher served first), fair across tenants."""

    def __init__(self, levels: int) -> None:
        self._levels: list[_Level[W]] = [_Level() for _ in range(levels)]
        #: Waiters queued; a plain attribute so the hot path can test it without a call.
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def count(self, priority: int) -> int:
        return len(self._levels[priority].order)

    def push(self, waiter: W) -> None:
        level = self._levels[waiter.priority]
        level.order[waiter] = None
        tenant = waiter.tenant
        fifo = level.tenants.get(tenant)
        if fifo is None:
            fifo = level.tenants[tenant] = deque()
            level.rotation.append(tenant)
        fifo.append(waiter)
        self.size += 1

    def peek(self) -> W | None:
        """The waiter :meth:`pop` would return, left in place."""
        for level in reversed(self._levels):
            if level.order:
                return level.tenants[level.rotation[0]][0]
        return None

    def pop(self) -> W | None:
        """Remove and return the next waiter to serve, or ``None`` when empty."""
        for level in reversed(self._levels):
            if level.order:
                tenant = level.rotation.popleft()
                fifo = level.tenants[tenant]
                waiter = fifo.popleft()
                if fifo:
                    level.rotation.append(tenant)  # back of the line for its next turn
                else:
                    del level.tenants[tenant]
                del level.order[waiter]
                self.size -= 1
                return waiter
        return None

    def remove(self, waiter: W) -> bool:
        """Take ``waiter`` out wherever it is; False when it was not queued."""
        level = self._levels[waiter.priority]
        if waiter not in level.order:
            return False
        del level.order[waiter]
        tenant = waiter.tenant
        fifo = level.tenants[tenant]
        if fifo[-1] is waiter:  # the common eviction case: newest of its tenant
            fifo.pop()
        else:
            fifo.remove(waiter)
        if not fifo:
            del level.tenants[tenant]
            level.rotation.remove(tenant)
        self.size -= 1
        return True

    def lowest(self) -> int | None:
        """The lowest priority that has waiters."""
        for priority, level in enumerate(self._levels):
            if level.order:
                return priority
        return None

    def newest(self, priority: int) -> W | None:
        order = self._levels[priority].order
        return next(reversed(order)) if order else None

    def oldest(self, priority: int) -> W | None:
        order = self._levels[priority].order
        return next(iter(order)) if order else None

    def waiters(self, priority: int) -> list[W]:
        """A copy of one level's waiters, oldest first (safe to remove from while iterating)."""
        return list(self._levels[priority].order)
