"""The contract between the rate limiter and wherever its per-key state lives.

A :class:`LimitStore` performs one GCRA step (see ``_gcra.py``) for one key *atomically*: two
gateway instances sharing a Redis store, or two tasks sharing a memory store, can never both
spend the same capacity. The limiter owns the policy (rate, burst, keys, costs, waiting); the
store owns only the state and the atomic step.

In-process stores also satisfy :class:`SyncLimitStore` (``sync`` is True): the limiter then
calls them as plain functions, so the memory path never pays for an ``await``.
"""

from __future__ import annotations

from typing import Protocol

from mypy_extensions import mypyc_attr

from ._gcra import Decision


class LimitStore(Protocol):
    """Per-key GCRA state with an atomic step."""

    #: True when the store also implements :class:`SyncLimitStore` (no I/O on the hot path).
    sync: bool
    #: Failures talking to the backend so far (always 0 for in-process stores).
    errors: int

    async def acquire(
        self,
        key: str,
        emission_interval: float,
        tolerance: float,
        cost: float = 1.0,
        now: float | None = None,
    ) -> Decision:
        """Admit and charge ``cost`` cells for ``key`` if the limit allows, atomically.

        ``emission_interval`` is seconds per cell, ``tolerance`` is ``burst * emission_interval``.
        ``now`` is the caller's clock reading; stores with their own time source (Redis server
        time) may ignore it.
        """
        ...

    async def adjust(
        self,
        key: str,
        emission_interval: float,
        tolerance: float,
        delta: float,
        now: float | None = None,
    ) -> Decision:
        """Charge (``delta > 0``, may go into debt, never rejects) or refund (``delta < 0``)."""
        ...

    def tracked_keys(self) -> int:
        """Keys currently held in this process (for ``snapshot()``)."""
        ...

    async def aclose(self) -> None:
        """Release connections; the store must not be used afterwards."""
        ...


# A base class, not a Protocol: the request path is compiled (headway._native), and compiled
# code calls a base class's methods through a table with unboxed floats, a Protocol's by name.
@mypyc_attr(allow_interpreted_subclasses=True)
class SyncLimitStore:
    """Base of a store whose step is a plain function call (in-process state). A subclass also
    implements :class:`LimitStore`, and sets ``sync`` True."""

    sync = True

    def admit(
        self, key: str, emission_interval: float, tolerance: float, cost: float, now: float
    ) -> float:
        """The hot path: 0.0 when admitted (and charged), else seconds until it would be
        (``inf`` when it never can). Allocates nothing."""
        raise NotImplementedError

    def acquire_nowait(
        self, key: str, emission_interval: float, tolerance: float, cost: float, now: float
    ) -> Decision:
        """Like :meth:`LimitStore.acquire`, synchronously, with the full decision."""
        raise NotImplementedError

    def adjust_nowait(
        self, key: str, emission_interval: float, tolerance: float, delta: float, now: float
    ) -> Decision:
        """Like :meth:`LimitStore.adjust`, synchronously."""
        raise NotImplementedError
