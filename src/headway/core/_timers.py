"""One timer per event loop and clock for all deadline scopes, instead of one per scope.

A gateway opens a deadline scope for every request and every upstream attempt; scheduling and
cancelling an event-loop timer for each is most of what ``asyncio.timeout`` costs. Here scopes
register in a heap and only the earliest deadline holds a real timer. Leaving a scope just marks
its entry dead (no heap surgery); dead entries are dropped when they reach the top or, if they
pile up (long deadlines, many short calls), by an occasional compaction, so memory stays bounded
by the number of live scopes.

Guarantees: every live entry fires exactly once, at or after its deadline on its clock; entries
fire in deadline order; a removed entry never fires.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import weakref
from collections.abc import Callable
from itertools import count
from typing import Any, Final

from ._clock import Clock, RealClock, TimerHandle

# Compact when at least this many entries are dead and they are the majority.
_COMPACT_MIN_DEAD: Final = 256


# A heap entry is a list ``[when, seq, callback]`` so heapq compares it in C; a removed entry
# has its callback set to None and is dropped lazily.
TimerEntry = list[Any]
_CALLBACK: Final = 2


class TimerQueue:
    """Deadline timers for one clock on one event loop, backed by a single real timer."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[TimerEntry] = []
        self._seq = count()
        self._timer: TimerHandle | None = None
        self._timer_when = math.inf
        self._dead = 0
        self._lazy = isinstance(clock, RealClock)

    def __len__(self) -> int:
        """Live entries."""
        return len(self._heap) - self._dead

    def add(self, when: float, callback: Callable[[], object]) -> TimerEntry:
        """Register ``callback`` for ``when``; pass the entry to :meth:`remove` to withdraw it."""
        entry = [when, next(self._seq), callback]
        heapq.heappush(self._heap, entry)
        if when < self._timer_when:
            self._schedule(when)
        return entry

    def remove(self, entry: TimerEntry) -> None:
        """Make sure ``entry`` never fires (a no-op when it already fired or was removed)."""
        if entry[_CALLBACK] is not None:
            entry[_CALLBACK] = None
            self._dead += 1
            if self._dead == len(self._heap):
                self._clear()
            elif self._dead >= _COMPACT_MIN_DEAD:
                self._maybe_compact()

    def _schedule(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_when = when
        self._timer = self._clock.call_later(when - self._clock.now(), self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_when = math.inf
        heap = self._heap
        now = self._clock.now()
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            callback = entry[_CALLBACK]
            if callback is None:
                self._dead -= 1
                continue
            entry[_CALLBACK] = None
            callback()
        self._reschedule()

    def _reschedule(self) -> None:
        heap = self._heap
        while heap and heap[0][_CALLBACK] is None:
            heapq.heappop(heap)
            self._dead -= 1
        if heap:
            self._schedule(heap[0][0])
        elif self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_when = math.inf

    def _clear(self) -> None:
        """No live entry is left: drop the dead ones at once.

        On the real clock the loop timer stays (scheduling and cancelling a loop timer is most
        of what a timeout costs): when it fires it finds nothing to do, and meanwhile new scopes
        with later deadlines (the common case: the same timeout on every call) need no timer of
        their own. Other clocks' timers are cheap, and cancelling them keeps a test clock's
        ``pending_timers`` an exact leak check.
        """
        self._heap.clear()
        self._dead = 0
        if self._timer is not None and not self._lazy:
            self._timer.cancel()
            self._timer = None
            self._timer_when = math.inf

    def _maybe_compact(self) -> None:
        if self._dead * 2 > len(self._heap):
            self._heap = [e for e in self._heap if e[_CALLBACK] is not None]
            heapq.heapify(self._heap)
            self._dead = 0
            self._reschedule()


_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, TimerQueue]] = (
    weakref.WeakKeyDictionary()
)


# The last lookup, because nearly every call in a process asks for the same loop and clock.
_last: tuple[object, int, TimerQueue | None] = (None, 0, None)


def timer_queue(clock: Clock, loop: asyncio.AbstractEventLoop | None = None) -> TimerQueue:
    """The queue for ``clock`` on ``loop`` (default: the running one; timers are loop-bound)."""
    global _last
    if loop is None:
        loop = asyncio.get_running_loop()
    last_loop, last_id, last_queue = _last
    if loop is last_loop and id(clock) == last_id and last_queue is not None:
        return last_queue
    per_loop = _queues.get(loop)
    if per_loop is None:
        per_loop = _queues[loop] = {}
    queue = per_loop.get(id(clock))
    if queue is None:
        # The queue holds the clock, so its id cannot be reused while the entry exists.
        queue = per_loop[id(clock)] = TimerQueue(clock)
    _last = (loop, id(clock), queue)
    return queue


try:  # CPython's C accelerator: the task table, readable without a second loop lookup.
    from _asyncio import _current_tasks  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - other interpreters
    _current_tasks = None


def running_task() -> tuple[asyncio.AbstractEventLoop, asyncio.Task[Any] | None]:
    """The running loop and task with one loop lookup (``get_running_loop`` costs a getpid()
    system call, and ``asyncio.current_task`` would make a second one)."""
    loop = asyncio.get_running_loop()
    if _current_tasks is not None:
        return loop, _current_tasks.get(loop)
    return loop, asyncio.current_task(loop)
