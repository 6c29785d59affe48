from collections.abc import Callable, Sequence
from typing import Any

def format_lines(
    ts: bytes,
    outcomes: Sequence[Any],
    models: frozenset[str],
    other: str,
    decisions: Callable[[Any], list[str]],
) -> bytes: ...
def add_to_bins(
    bins: dict[int, int], values: list[float], inv_log_gamma: float, min_value: float
) -> int: ...

class Tally:
    """The C twin of ``headway.observe._tally.PyTally``."""

    def __init__(self, bounds: Sequence[float], tps_bounds: Sequence[float]) -> None: ...
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
    def take(self) -> list[tuple[int, int, float, list[int], bool, int, int, float, list[int]]]: ...
