"""What a batch of outcomes adds to each metric series, held apart until a scrape takes it.

Why: counting each request straight into its prometheus series meant, per request, a bisect
and a dozen attribute updates spread over several objects (~9.5k instructions in the gateway,
and ~4k more per upstream attempt). A tally keeps each series' new numbers in one slot (a
count, a latency sum and buckets, token totals, a tokens/s histogram) and hands them over in
:meth:`PyTally.take`, which :class:`GatewayMetrics` calls when it is scraped. The C version
(``_speedups.Tally``, built at install) does the same in C arrays; this is its reference, and
the tests hold the two to the same numbers bit for bit.

A slot is the integer the caller's ``miss(*key)`` returns for a key not in its ``index``
dict; the caller decides which keys it remembers there (only bounded ones). ``bind`` names the
list a slot's latencies go to (its latency sketch's pending values) and the object ``add_*``
returns when an append brings that list to ``flush_at`` items (the sketch to fold).
"""

from __future__ import annotations

import operator
from bisect import bisect_left
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any, Protocol

#: One slot's numbers since the last take: (slot, count, latency sum, latency buckets,
#: tokens seen, prompt tokens, completion tokens, tokens/s sum, tokens/s buckets, streamed,
#: TTFT sum, TTFT buckets (the latency bounds), chunk gap sum, chunk gap buckets).
Taken = tuple[
    int,
    int,
    float,
    list[int],
    bool,
    int,
    int,
    float,
    list[int],
    bool,
    float,
    list[int],
    float,
    list[int],
]

#: A slot past this is a caller's bug, not a series (series are bounded by the config).
MAX_SLOTS = 1 << 20


class Tally(Protocol):
    """What :class:`PyTally` and the C ``Tally`` both offer (see the module)."""

    def add_requests(
        self, outcomes: Sequence[Any], index: dict[Any, int], miss: Callable[..., int]
    ) -> list[Any]: ...
    def add_attempts(
        self,
        attempts: Sequence[tuple[str, int, float]],
        index: dict[Any, int],
        miss: Callable[..., int],
    ) -> list[Any]: ...
    def bind(self, slot: int, run: list[float], flush: object) -> None: ...
    def take(self) -> list[Taken]: ...


class _Slot:
    __slots__ = (
        "buckets",
        "completion",
        "count",
        "dirty",
        "flush",
        "gap_sum",
        "gaps",
        "prompt",
        "run",
        "streamed",
        "sum",
        "tokens_seen",
        "tps",
        "tps_sum",
        "ttft",
        "ttft_sum",
    )

    def __init__(self, buckets: int, tps_buckets: int, gap_buckets: int) -> None:
        self.count = 0
        self.sum = 0.0
        self.buckets = [0] * buckets
        self.dirty = False
        self.tokens_seen = False
        self.prompt = 0
        self.completion = 0
        self.tps_sum = 0.0
        self.tps = [0] * tps_buckets
        self.streamed = False
        self.ttft_sum = 0.0
        self.ttft = [0] * buckets
        self.gap_sum = 0.0
        self.gaps = [0] * gap_buckets
        self.run: list[float] | None = None
        self.flush: object = None


class PyTally:
    """The reference tally (see the module): ``bounds`` are the latency histogram's, and
    ``tps_bounds`` the tokens-per-second histogram's."""

    __slots__ = ("_bounds", "_flush_at", "_gap_bounds", "_slots", "_tps_bounds")

    def __init__(
        self,
        bounds: Sequence[float],
        tps_bounds: Sequence[float],
        *,
        flush_at: int = 1,
        gap_bounds: Sequence[float] = (),
    ) -> None:
        if flush_at < 1:
            raise ValueError("flush_at must be at least 1")
        self._flush_at = flush_at
        self._bounds = tuple(float(b) for b in bounds)
        self._tps_bounds = tuple(float(b) for b in tps_bounds)
        self._gap_bounds = tuple(float(b) for b in gap_bounds)
        self._slots: list[_Slot] = []

    def _slot(self, at: int) -> _Slot:
        at = operator.index(at)
        if not 0 <= at < MAX_SLOTS:
            raise ValueError(f"slot {at} out of range")
        slots = self._slots
        while len(slots) <= at:
            slots.append(
                _Slot(len(self._bounds) + 1, len(self._tps_bounds) + 1, len(self._gap_bounds) + 1)
            )
        return slots[at]

    def bind(self, slot: int, run: list[float], flush: object) -> None:
        s = self._slot(slot)
        s.run = run
        s.flush = flush

    def add_requests(
        self, outcomes: Sequence[Any], index: dict[Any, int], miss: Callable[..., int]
    ) -> list[Any]:
        """Each outcome (``Counted``: route, model, tenant, status, reason, latency, and
        prompt, completion and generation when it reported usage; ``ttft`` and ``stamps``, the
        chunks' arrival times, when it was streamed and has them) into its key's slot."""
        flushed: list[Any] = []
        for o in outcomes:
            key = (o.route, o.model, o.tenant, o.status, o.reason)
            at = index.get(key)
            if at is None:
                at = miss(*key)
            latency = o.latency
            seconds = _seconds(latency)
            completion = o.completion
            if completion is not None:
                completion = _int(completion)
                prompt = o.prompt
                if prompt is not None:
                    prompt = _int(prompt)
                rate = None
                if completion > 0:
                    generation = o.generation
                    if _seconds(generation) > 0:
                        rate = _seconds(completion / generation)
            ttft = getattr(o, "ttft", None)
            first = None if ttft is None else _seconds(ttft)
            stamps = getattr(o, "stamps", None)
            if stamps is not None and (
                not isinstance(stamps, list) or any(type(t) is not float for t in stamps)
            ):
                raise TypeError("stamps must be a list of floats")
            s = self._slot(at)
            self._add(s, seconds, latency, flushed)
            if completion is not None:
                s.tokens_seen = True
                if prompt is not None and prompt > 0:
                    s.prompt += prompt
                if completion > 0:
                    s.completion += completion
                if rate is not None:
                    s.tps[bisect_left(self._tps_bounds, rate)] += 1
                    s.tps_sum += rate
            if first is not None or stamps is not None:
                s.streamed = True
            if first is not None:
                s.ttft[bisect_left(self._bounds, first)] += 1
                s.ttft_sum += first
            if stamps:
                gaps = s.gaps
                for before, after in pairwise(stamps):
                    gap = after - before
                    gaps[bisect_left(self._gap_bounds, gap)] += 1
                    s.gap_sum += gap
        return flushed

    def add_attempts(
        self,
        attempts: Sequence[tuple[str, int, float]],
        index: dict[Any, int],
        miss: Callable[..., int],
    ) -> list[Any]:
        """Each ``(endpoint, status, seconds)`` into the slot of ``(endpoint, status)``."""
        flushed: list[Any] = []
        for item in attempts:
            if not isinstance(item, tuple) or len(item) != 3:
                raise TypeError("an attempt is an (endpoint, status, seconds) tuple")
            key = item[:2]
            at = index.get(key)
            if at is None:
                at = miss(*key)
            latency = item[2]
            self._add(self._slot(at), _seconds(latency), latency, flushed)
        return flushed

    def _add(self, s: _Slot, seconds: float, latency: float, flushed: list[Any]) -> None:
        s.dirty = True
        s.count += 1
        s.sum += seconds
        s.buckets[bisect_left(self._bounds, seconds)] += 1
        run = s.run
        if run is not None:
            run.append(latency)
            if len(run) == self._flush_at and s.flush is not None:
                flushed.append(s.flush)

    def take(self) -> list[Taken]:
        """Every slot touched since the last take, zeroed as it is handed over."""
        out: list[Taken] = []
        for at, s in enumerate(self._slots):
            if not s.dirty:
                continue
            out.append(
                (
                    at,
                    s.count,
                    s.sum,
                    s.buckets,
                    s.tokens_seen,
                    s.prompt,
                    s.completion,
                    s.tps_sum,
                    s.tps,
                    s.streamed,
                    s.ttft_sum,
                    s.ttft,
                    s.gap_sum,
                    s.gaps,
                )
            )
            s.dirty = s.tokens_seen = s.streamed = False
            s.count = s.prompt = s.completion = 0
            s.sum = s.tps_sum = s.ttft_sum = s.gap_sum = 0.0
            s.buckets = [0] * len(s.buckets)
            s.tps = [0] * len(s.tps)
            s.ttft = [0] * len(s.ttft)
            s.gaps = [0] * len(s.gaps)
        return out


def _seconds(value: Any) -> float:
    """A number as a float, as C's ``PyFloat_AsDouble`` takes it (text is not a number)."""
    if isinstance(value, str | bytes | bytearray):
        raise TypeError(f"must be a real number, not {type(value).__name__}")
    return float(value)


def _int(value: object) -> int:
    """A token count as an exact int (bool and int subclasses included, as in the C tally,
    where adding one to a total must run no Python code)."""
    if not isinstance(value, int):
        raise TypeError(f"a token count must be an int, not {type(value).__name__}")
    return operator.index(value)


#: The tally GatewayMetrics uses: the C one when it was built (see setup.py).
new_tally: Callable[..., Tally]
try:
    from ._speedups import Tally as _CTally

    new_tally = _CTally
except ImportError:  # pragma: no cover - the pure-Python tally runs
    new_tally = PyTally
