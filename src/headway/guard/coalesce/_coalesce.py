"""Request coalescing (singleflight): identical calls in flight share one underlying call.

Guarantees:

- At most one underlying call per key is in flight; every caller that arrives while it runs
  (a *follower*) gets its result, or the very same exception object.
- The underlying call runs in its own task, in a copy of the first caller's (the *leader's*)
  context without its deadline, so no single caller's cancellation or deadline cancels work
  others wait for. Each caller waits bounded by its own deadline (a :class:`DeadlineScope`
  around the wait, raising :class:`DeadlineExceeded` for that caller only).
- Waiters are reference-counted: when the last one leaves (cancelled or timed out) the shared
  task is cancelled and the key forgotten, so abandoned work does not run on.
- The key is forgotten as soon as the call finishes: nothing is cached (that is ``Cache``'s job).

The shared call does not see any deadline: a timeout layer *below* the coalescer bounds it, and
it is in any case cancelled once its last waiter is gone, so it never outlives the latest
deadline among its waiters.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, ParamSpec, TypeVar, cast

from headway.core import (
    NO_HOOKS,
    REAL_CLOCK,
    Clock,
    DeadlineScope,
    Guard,
    HeadwayError,
    Hooks,
    Service,
    current_context,
)

from ._detach import detached_context
from ._keys import Invoke, call_key, missing_key

Req = TypeVar("Req")
Resp = TypeVar("Resp")
T = TypeVar("T")
P = ParamSpec("P")


class SharedCallCancelled(HeadwayError):
    """The shared call was cancelled from outside (e.g. ``aclose()``) while this caller waited."""

    reason = "coalesce_cancelled"
    retryable = True


class _Flight:
    """One shared call: its task and the futures of the callers still waiting for it.

    The task hands its outcome to each waiter's own future itself, as its last step, so waiters
    wake one loop turn after the call ends (``asyncio.shield`` would cost one turn more), and a
    waiter that is cancelled only cancels its own future, never the shared task.
    """

    def __init__(self, owner: Coalesce, key: Hashable) -> None:
        self.owner = owner
        self.key = key
        self.task: asyncio.Task[None] | None = None
        self.waiters: list[asyncio.Future[Any]] = []
        self.done = False

    def forget(self) -> None:
        inflight = self.owner._inflight
        if inflight.get(self.key) is self:
            del inflight[self.key]

    async def run(self, inner: Service[Any, Any], request: Any) -> None:
        # Runs inside the shared task, so the service sees the task's (detached) context even in
        # the synchronous part of ``inner(request)``.
        try:
            result = await inner(request)
        except asyncio.CancelledError:
            self._fail(SharedCallCancelled("the shared call was cancelled"))
            raise
        except BaseException as exc:
            self._fail(exc)
            if not isinstance(exc, Exception):
                raise
            return
        self.done = True
        self.forget()
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(result)

    def _fail(self, exc: BaseException) -> None:
        self.done = True
        self.forget()
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_exception(exc)

    def finished(self, task: asyncio.Task[None]) -> None:
        self.owner._live.discard(task)
        if not self.done:  # cancelled before its first step: the body never ran
            self._fail(SharedCallCancelled("the shared call was cancelled"))
        if not task.cancelled():
            task.exception()  # retrieved: its waiters already have it


class Coalesce(Guard):
    """Singleflight as a guard: ``coalesce.call(service, request)``, a layer, or ``@coalesce``.

    ``key(request)`` says which requests are identical; it is required for layer and ``call``
    use. As a decorator without ``key``, calls are identified by function and arguments (calls
    with unhashable arguments pass through uncoalesced).
    As a decorator *with* ``key``, the request ``key`` receives is ``(args, kwargs)``.
    """

    kind = "coalesce"

    def __init__(
        self,
        key: Callable[[Any], Hashable] | None = None,
        *,
        name: str = "coalesce",
        clock: Clock = REAL_CLOCK,
        hooks: Hooks = NO_HOOKS,
    ) -> None:
        self.name = name
        self._key: Callable[[Any], Hashable] = missing_key if key is None else key
        self._clock = clock
        self._hooks = hooks
        self._inflight: dict[Hashable, _Flight] = {}
        # Every shared task not yet finished, forgotten or not, so aclose() can end them all.
        self._live: set[asyncio.Task[Any]] = set()
        self.calls = 0
        self.leaders = 0
        self.followers = 0
        self.abandoned = 0

    async def call(self, inner: Service[Req, Resp], request: Req) -> Resp:
        return await self.run(self._key(request), inner, request)

    async def run(self, key: Hashable, inner: Service[Req, Resp], request: Req) -> Resp:
        """Call ``inner(request)``, or join the call already in flight for ``key``."""
        self.calls += 1
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Resp] = loop.create_future()
        flight = self._inflight.get(key)
        if flight is None:
            self.leaders += 1
            # Registered before the task exists, so even an eagerly started task that finishes
            # inside create_task finds its key and its first waiter.
            self._inflight[key] = flight = _Flight(self, key)
            flight.waiters.append(waiter)
            flight.task = task = loop.create_task(
                flight.run(inner, request), context=detached_context()
            )
            task.add_done_callback(flight.finished)
            self._live.add(task)
        else:
            self.followers += 1
            flight.waiters.append(waiter)
        try:
            deadline = current_context().deadline
            if deadline == math.inf:
                return await waiter
            async with DeadlineScope(deadline, clock=self._clock):  # aexit never waits
                result = await waiter
            return result
        finally:
            if not flight.done:  # this caller left early (cancelled or out of time)
                flight.waiters.remove(waiter)
                if not flight.waiters:
                    self._abandon(flight)

    def _abandon(self, flight: _Flight) -> None:
        flight.forget()
        if flight.task is not None:
            flight.task.cancel()
        self.abandoned += 1
        self._hooks.on_event(self.kind, self.name, "abandoned")

    def forget(self, key: Hashable) -> None:
        """Let the next call for ``key`` start afresh; callers already waiting keep waiting."""
        flight = self._inflight.get(key)
        if flight is not None:
            flight.forget()

    def forget_all(self) -> None:
        """Let the next call for every key start afresh; callers already waiting keep waiting."""
        self._inflight.clear()

    async def aclose(self) -> None:
        """Cancel every shared call in flight and wait until they have ended."""
        tasks = list(self._live)
        self._inflight.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        if self._key is not missing_key:
            return super().__call__(fn)
        run = self.run
        invoke = Invoke(fn)

        @functools.wraps(fn)
        async def coalesced(*args: P.args, **kwargs: P.kwargs) -> T:
            key = call_key(invoke, args, kwargs)
            if key is None:
                return await fn(*args, **kwargs)
            return cast(T, await run(key, invoke, (args, kwargs)))

        return coalesced

    @property
    def inflight(self) -> int:
        """Shared calls running now."""
        return len(self._inflight)

    def snapshot(self) -> dict[str, float]:
        return {
            "calls": self.calls,
            "leaders": self.leaders,
            "followers": self.followers,
            "abandoned": self.abandoned,
            "inflight": len(self._inflight),
        }

    def __repr__(self) -> str:
        return f"Coalesce(name={self.name!r}, inflight={len(self._inflight)})"
