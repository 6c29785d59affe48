"""A FIFO capacity: at most ``limit`` sequences decode at once; the rest wait in arrival order.

This is what makes simulated latency rise with load: a request's time in queue adds to its
time to first token. A bounded queue (``max_queue``) refuses beyond it with ``QueueFull``.
A waiter cancelled after being granted a slot hands the slot on, so none leak.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

__all__ = ["Capacity", "QueueFull"]


class QueueFull(Exception):
    pass


class Capacity:
    __slots__ = ("_waiters", "active", "limit", "max_queue")

    def __init__(self, limit: int, max_queue: int | None = None) -> None:
        if limit < 1:
            raise ValueError("capacity must be at least 1")
        self.limit = limit
        self.max_queue = max_queue
        self.active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    @property
    def full(self) -> bool:
        """True when ``acquire`` would raise ``QueueFull`` now."""
        return (
            self.max_queue is not None
            and self.active >= self.limit
            and len(self._waiters) >= self.max_queue
        )

    async def acquire(self) -> None:
        if self.active < self.limit and not self._waiters:
            self.active += 1
            return
        if self.max_queue is not None and len(self._waiters) >= self.max_queue:
            raise QueueFull
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted just as we were cancelled: pass the slot on
            else:
                with contextlib.suppress(ValueError):  # release() may have skipped it already
                    self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot moves to the waiter; active is unchanged
                return
        self.active -= 1
