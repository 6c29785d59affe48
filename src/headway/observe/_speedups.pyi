from array import array
from collections.abc import Callable, Sequence
from typing import Any

def format_lines(
    ts: bytes,
    outcomes: Sequence[Any],
    models: frozenset[str],
    other: str,
    decisions: Callable[[Any], list[str]],
) -> bytes: ...
def iso_utc(seconds: float) -> bytes: ...
def add_gaps(counts: list[int], bounds: tuple[float, ...], stamps: list[float]) -> float: ...
def record_outcome(
    pending: list[Any],
    start: float,
    now: float,
    route: str,
    tenant: str | None,
    model: str | None,
    endpoint: str | None,
    request_id: str | None,
    attributes: Any,
    prompt: int | None,
    completion: int | None,
    trace: Any,
    status: int,
    reason: str,
    stream: bool,
    first: float | None,
    stamps: list[float] | None,
) -> bool: ...
def add_to_counts(
    counts: array[int],
    offset: int,
    collapsed: bool,
    values: list[float],
    inv_log_gamma: float,
    min_value: float,
) -> tuple[int, float, float, float] | tuple[int, int]: ...

class Tally:
    """The C twin of ``headway.observe._tally.PyTally``."""

    def __init__(
        self,
        bounds: Sequence[float],
        tps_bounds: Sequence[float],
        *,
        flush_at: int = 1,
        gap_bounds: Sequence[float] = (),
    ) -> None: ...
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
    def take(
        self,
    ) -> list[
        tuple[
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
    ]: ...

class Outcome:
    """The C twin of ``headway.gateway._recorder.PyObservation``."""

    start: float
    route: str
    tenant: str | None
    model: str | None
    endpoint: str | None
    request_id: str | None
    attributes: Any
    prompt: int | None
    completion: int | None
    ttft: float | None
    stamps: list[float] | None
    generation: float
    stream: bool
    trace: Any
    trace_id: str | None
    status: int
    reason: str
    latency: float

    def __init__(self, start: float, route: str) -> None: ...
