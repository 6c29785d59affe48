"""The circuit breaker: stop calling a target that is failing, probe it, resume when it recovers.

State machine (Resilience4j's, with Envoy-style growing open time):

- CLOSED: calls pass; each outcome goes into a sliding window. Once the window holds at least
  ``minimum_number_of_calls`` outcomes, a failure rate or slow-call rate at or above its threshold
  opens the breaker.
- OPEN: calls are refused with :class:`~headway.core.CircuitOpen` whose ``retry_after`` is the
  open time left. The first call after the open time moves the breaker to HALF_OPEN (lazily: no
  timer runs while nobody calls).
- HALF_OPEN: at most ``permitted_calls_in_half_open`` probes are admitted; when that many have
  finished, the breaker closes if both their rates are below the thresholds and opens again
  otherwise (each re-open multiplies the open time, up to a cap). HALF_OPEN never closes or opens
  before all its probes have reported, and OPEN never goes straight to CLOSED except by ``reset``.

Every admission returns a *permit*: the number of the state period (epoch) it was admitted in.
An outcome is counted towards a decision only in the period its call was admitted in, so a slow
call admitted while CLOSED cannot be mistaken for a half-open probe, and a cancelled call gives
back exactly the probe permit it took.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from types import TracebackType
from typing import Final, ParamSpec, TypeVar

from headway.core import NO_HOOKS, REAL_CLOCK, CircuitOpen, Clock, Guard, Hooks, Service

from ._config import BreakerConfig
from ._state import BreakerState
from ._window import WindowType, make_window

Req = TypeVar("Req")
Resp = TypeVar("Resp")
T = TypeVar("T")
P = ParamSpec("P")

StateListener = Callable[[BreakerState, BreakerState], object]

_CLOSED: Final = BreakerState.CLOSED
_OPEN: Final = BreakerState.OPEN
_HALF_OPEN: Final = BreakerState.HALF_OPEN

_STATE_EVENTS: Final = {
    _CLOSED: "state.closed",
    _OPEN: "state.open",
    _HALF_OPEN: "state.half_open",
}

# Forced modes set by operators.
_NOT_FORCED: Final = 0
_FORCED_OPEN: Final = 1
_FORCED_CLOSED: Final = 2


class _Entry:
    """One ``async with`` of a breaker in a task: its start time, its permit, and the enclosing
    ``async with`` of the same breaker in the same task, if any. (A class, not a recursive
    tuple alias: mypyc cannot compile a type that refers to itself.)"""

    def __init__(self, start: float, permit: int, outer: _Entry | None) -> None:
        self.start = start
        self.permit = permit
        self.outer = outer


_DEFAULT_CONFIG: Final = BreakerConfig()


class CircuitBreaker(Guard):
    """Refuses calls to a failing target for a while, then lets a few probes decide.

    Use it as a layer (``breaker.wrap(service)``), a decorator (``@breaker``), around a block
    (``async with breaker: ...``), or through the permission API for callers that measure the
    call themselves (a streamed response ends long after the call returned)::

        permit = breaker.acquire()          # raises CircuitOpen
        ...                                 # later, when the stream has ended:
        breaker.on_success(permit, duration)    # or on_failure / on_error / release
    """

    kind = "breaker"

    def __init__(
        self,
        name: str = "breaker",
        config: BreakerConfig = _DEFAULT_CONFIG,
        *,
        clock: Clock = REAL_CLOCK,
        hooks: Hooks = NO_HOOKS,
    ) -> None:
        self.name = name
        self.config = config
        self._clock = clock
        self._now = clock.now
        self._hooks = hooks
        self._failure_threshold = config.failure_rate_threshold
        self._slow_threshold = config.slow_call_rate_threshold
        self._slow_duration = config.slow_call_duration
        self._is_failure = config.is_failure
        self._is_ignored = config.is_ignored
        self._permitted = config.permitted_calls_in_half_open
        self._window = make_window(config.window_type, config.window_size)
        min_calls = config.minimum_number_of_calls
        if config.window_type is WindowType.COUNT_BASED:
            # As in Resilience4j: a window smaller than the minimum could never reach it.
            min_calls = min(min_calls, config.window_size)
        self._min_calls = min_calls
        self._state = _CLOSED
        self._epoch = 1
        self._live = 1
        self._timed = config.window_type is WindowType.TIME_BASED
        self._forced = _NOT_FORCED
        self._open_wait = config.wait_duration_in_open
        self._open_until = -math.inf
        self._probes_admitted = 0
        self._probes_done = 0
        self._probe_failures = 0
        self._probe_slow = 0
        self._listeners: list[StateListener] = []
        self._ready: asyncio.Future[None] | None = None
        # Per-task start time and permit of ``async with breaker:`` blocks; tasks copy the
        # context, so concurrent blocks never see each other's entries.
        self._entry: ContextVar[_Entry | None] = ContextVar(f"breaker:{name}", default=None)
        #: Outcomes recorded, failures and slow calls among them, calls refused, state changes.
        self.calls = 0
        self.failures = 0
        self.slow_calls = 0
        self.rejected = 0
        self.transitions = 0

    # -- permission API ---------------------------------------------------------------------

    def acquire(self) -> int:
        """Admit one call or raise :class:`CircuitOpen`; returns the permit to report back."""
        if self._state is _CLOSED:
            return self._epoch
        return self._acquire_slow()

    def try_acquire(self) -> int | None:
        """Like :meth:`acquire`, but ``None`` instead of raising when the call is refused."""
        if self._state is _CLOSED:
            return self._epoch
        try:
            return self._acquire_slow()
        except CircuitOpen:
            return None

    def on_success(self, permit: int, duration: float) -> None:
        """The admitted call succeeded after ``duration`` seconds."""
        self._record(permit, False, duration)

    def on_failure(self, permit: int, duration: float) -> None:
        """The admitted call failed after ``duration`` seconds."""
        self._record(permit, True, duration)

    def on_error(self, permit: int, error: BaseException, duration: float) -> None:
        """The admitted call raised ``error``; the predicates decide what it counts as."""
        if self._is_ignored(error):
            self.release(permit)
        else:
            self._record(permit, self._is_failure(error), duration)

    def release(self, permit: int) -> None:
        """The admitted call was abandoned (cancelled): record nothing, free its probe slot."""
        if permit == self._epoch and self._state is _HALF_OPEN:
            self._probes_admitted -= 1

    # -- Guard -------------------------------------------------------------------------------

    async def call(self, inner: Service[Req, Resp], request: Req) -> Resp:
        permit = self._epoch if self._state is _CLOSED else self._acquire_slow()
        now = self._now
        start = now()
        try:
            response = await inner(request)
        except BaseException as error:
            self.on_error(permit, error, now() - start)
            raise
        self._record(permit, False, now() - start)
        return response

    def __call__(self, fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        """Decorate an async function; the same logic as :meth:`call`, without adapting the
        arguments to a one-request service on every call."""
        breaker = self

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
            permit = breaker._epoch if breaker._state is _CLOSED else breaker._acquire_slow()
            now = breaker._now
            start = now()
            try:
                result = await fn(*args, **kwargs)
            except BaseException as error:
                breaker.on_error(permit, error, now() - start)
                raise
            breaker._record(permit, False, now() - start)
            return result

        return guarded

    # ``async with`` runs two plain methods that return an already-completed future: awaiting it
    # costs no coroutine frame and never suspends, so the block's happy path stays cheap.

    def __aenter__(self) -> Awaitable[None]:
        permit = self._epoch if self._state is _CLOSED else self._acquire_slow()
        entry = self._entry
        entry.set(_Entry(self._now(), permit, entry.get()))
        return self._ready or self._make_ready()

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Awaitable[None]:
        entry = self._entry
        current = entry.get()
        if current is None:
            raise RuntimeError("CircuitBreaker.__aexit__ without __aenter__ in this task")
        start, permit = current.start, current.permit
        entry.set(current.outer)
        if exc is None:
            self._record(permit, False, self._now() - start)
        else:
            self.on_error(permit, exc, self._now() - start)
        return self._ready or self._make_ready()

    def _make_ready(self) -> asyncio.Future[None]:
        # A completed future yields its result without consulting its loop, so one made on the
        # first running loop serves every later one.
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ready.set_result(None)
        self._ready = ready
        return ready

    # -- operators -----------------------------------------------------------------------------

    def force_open(self) -> None:
        """Refuse every call until :meth:`reset` (for draining or a known-bad target)."""
        self._forced = _FORCED_OPEN
        if self._state is not _OPEN:
            self._transition(_OPEN)
        else:
            self._new_epoch()

    def force_closed(self) -> None:
        """Admit every call and record nothing until :meth:`reset` (the breaker is disabled)."""
        self._forced = _FORCED_CLOSED
        if self._state is not _CLOSED:
            self._transition(_CLOSED)
        else:
            self._new_epoch()
            self._window.reset()

    def reset(self) -> None:
        """Back to a fresh CLOSED state: empty window, base open time, no forced mode."""
        self._forced = _NOT_FORCED
        self._open_wait = self.config.wait_duration_in_open
        if self._state is not _CLOSED:
            self._transition(_CLOSED)
        else:
            self._new_epoch()
            self._window.reset()

    def on_state_change(self, listener: StateListener) -> StateListener:
        """Call ``listener(old, new)`` after every state change, in registration order.

        Listeners run synchronously inside the call that caused the change, after the new
        state is in place and after the hook event; they must not raise. Returns ``listener``,
        so this also works as a decorator.
        """
        self._listeners.append(listener)
        return listener

    # -- observation -------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state (an expired OPEN shows as OPEN until the next call arrives)."""
        return self._state

    @property
    def forced(self) -> bool:
        """Whether an operator forced the state (``force_open``/``force_closed``)."""
        return self._forced != _NOT_FORCED

    @property
    def retry_after(self) -> float | None:
        """Seconds until a probe may be admitted; 0 when calls pass, None when unknown."""
        if self._state is _OPEN:
            if self._forced:
                return None
            return max(0.0, self._open_until - self._now())
        return 0.0

    @property
    def failure_rate(self) -> float:
        """Percentage of failed calls in the window (0 when it is empty)."""
        window = self._window
        window.expire(self._now())
        return window.failures * 100.0 / window.calls if window.calls else 0.0

    @property
    def slow_call_rate(self) -> float:
        """Percentage of slow calls in the window (0 when it is empty)."""
        window = self._window
        window.expire(self._now())
        return window.slow_calls * 100.0 / window.calls if window.calls else 0.0

    def snapshot(self) -> dict[str, float]:
        failure_rate = self.failure_rate
        return {
            "state": float(self._state),
            "forced": float(self._forced),
            "calls": float(self.calls),
            "failures": float(self.failures),
            "slow_calls": float(self.slow_calls),
            "rejected": float(self.rejected),
            "transitions": float(self.transitions),
            "window_calls": float(self._window.calls),
            "failure_rate": failure_rate,
            "slow_call_rate": self.slow_call_rate,
        }

    def __repr__(self) -> str:
        return f"CircuitBreaker(name={self.name!r}, state={self._state.name})"

    # -- mechanism -----------------------------------------------------------------------------

    def _new_epoch(self) -> None:
        self._epoch += 1
        # Outcomes decide only while nobody forces the state; permits are never 0.
        self._live = 0 if self._forced else self._epoch

    def _acquire_slow(self) -> int:
        state = self._state
        if state is _CLOSED:
            return self._epoch
        if state is _OPEN:
            if self._forced:
                self._reject(None)
            remaining = self._open_until - self._now()
            if remaining > 0.0:
                self._reject(remaining)
            self._transition(_HALF_OPEN)
        if self._probes_admitted >= self._permitted:
            # All probes are out; how long they take is not ours to know.
            self._reject(None)
        self._probes_admitted += 1
        return self._epoch

    def _reject(self, retry_after: float | None) -> None:
        self.rejected += 1
        self._hooks.on_event(self.kind, self.name, "rejected", 1.0)
        raise CircuitOpen(f"circuit {self.name!r} is open", retry_after=retry_after)

    def _record(self, permit: int, failed: bool, duration: float) -> None:
        self.calls += 1
        if failed or duration > self._slow_duration:
            self._record_bad(permit, failed, duration > self._slow_duration)
        elif permit == self._live:
            if self._state is _CLOSED:
                window = self._window
                window.record_success(self._now() if self._timed else 0.0)
                # In a count window a fast success lowers both rates, so it can only open the
                # breaker by bringing the window up to the minimum number of calls; a time
                # window may also have dropped successes that expired.
                if self._timed or window.calls == self._min_calls:
                    self._check_window()
            else:
                self._record_probe(False, False)

    def _record_bad(self, permit: int, failed: bool, slow: bool) -> None:
        if failed:
            self.failures += 1
        if slow:
            self.slow_calls += 1
        if permit != self._live:
            # Admitted in an earlier period, or the breaker is forced: counted, not decisive.
            return
        if self._state is _CLOSED:
            self._window.record(failed, slow, self._now())
            self._check_window()
        else:
            self._record_probe(failed, slow)

    def _check_window(self) -> None:
        window = self._window
        calls = window.calls
        if calls >= self._min_calls and (
            window.failures * 100.0 >= self._failure_threshold * calls
            or window.slow_calls * 100.0 >= self._slow_threshold * calls
        ):
            self._transition(_OPEN)

    def _record_probe(self, failed: bool, slow: bool) -> None:
        self._probes_done += 1
        if failed:
            self._probe_failures += 1
        if slow:
            self._probe_slow += 1
        done = self._probes_done
        if done < self._permitted:
            return
        if (
            self._probe_failures * 100.0 >= self._failure_threshold * done
            or self._probe_slow * 100.0 >= self._slow_threshold * done
        ):
            config = self.config
            self._open_wait = min(
                self._open_wait * config.open_backoff_multiplier,
                config.max_wait_duration_in_open,
            )
            self._transition(_OPEN)
        else:
            self._transition(_CLOSED)

    def _transition(self, new: BreakerState) -> None:
        old = self._state
        self._state = new
        self._new_epoch()
        self.transitions += 1
        if new is _CLOSED:
            self._window.reset()
            self._open_wait = self.config.wait_duration_in_open
        elif new is _OPEN:
            self._open_until = math.inf if self._forced else self._now() + self._open_wait
        else:
            self._probes_admitted = 0
            self._probes_done = 0
            self._probe_failures = 0
            self._probe_slow = 0
        self._hooks.on_event(self.kind, self.name, _STATE_EVENTS[new], float(new))
        for listener in tuple(self._listeners):
            listener(old, new)
