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
