"""Response comparison for shadow traffic: does the candidate answer like the primary did?

Twitter's Diffy idea, for model outputs: compare a primary answer with a candidate's on the same
request along a few dimensions, count how often each differs, and judge the candidate against
the *noise floor*, the rate at which two copies of the stable model already differ on the same
requests (model outputs are not deterministic, so a raw diff rate says little on its own).

Dimensions (``DIMENSIONS``), each differing or not per comparison:

- ``status``: HTTP status (0 for no answer at all);
- ``schema``: the JSON shape (keys and value types, arrays as the set of their element shapes),
  ignoring the configured field names (ids, timestamps) wherever they appear;
- ``fields``: every value outside the ignored fields and the generated content (``content``,
  ``text``, ``embedding``), e.g. ``finish_reason``, ``role``, ``usage``;
- ``length``: characters of generated text, differing when the longer is more than
  ``max_length_ratio`` times the shorter;
- ``latency``: seconds to the answer, differing beyond ``max_latency_ratio`` either way;
- ``text``: similarity of the generated text below ``min_similarity``. Similarity is the
  weighted (multiset) Jaccard index of lowercased word tokens, ``sum(min counts) / sum(max
  counts)``: linear time and memory in the text (``difflib``'s ratio is quadratic in the worst
  case, too slow for long completions on a gateway), insensitive to small reorderings, and,
  unlike a set Jaccard, it sees repetition and length (a half-length answer scores about 0.5).

A dimension that cannot be judged for a pair (no JSON on either side, no text in an embeddings
answer) is not counted for it. Pure functions and plain counters: no clock, no I/O.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "DEFAULT_IGNORED_FIELDS",
    "DIMENSIONS",
    "Comparison",
    "DiffCounters",
    "Observed",
    "Tolerances",
    "compare",
    "relative_rates",
    "text_similarity",
]

DIMENSIONS = ("status", "schema", "fields", "length", "latency", "text")
#: Fields that differ on every answer by design (OpenAI response ids, timestamps, backend
#: build fingerprints); Diffy's docs give the same examples for its ignored fields.
DEFAULT_IGNORED_FIELDS = ("id", "created", "system_fingerprint")
# Generated content: judged by the length and text dimensions, not as field values.
_CONTENT_KEYS = frozenset({"content", "text", "embedding"})
_WORD = re.compile(r"\w+")


@dataclass(frozen=True, slots=True)
class Observed:
    """One side's answer: status (0 = none, an error was raised), body, seconds taken."""

    status: int
    body: bytes
    latency: float


@dataclass(frozen=True, slots=True)
class Tolerances:
    """Where a ratio or score starts to count as a difference (our defaults: a 1.5x length
    change and a 2x latency change are what an operator notices on a dashboard; a weighted
    Jaccard of 0.8 is the edit distance of roughly one word in ten)."""

    max_length_ratio: float = 1.5
    max_latency_ratio: float = 2.0
    min_similarity: float = 0.8


@dataclass(frozen=True, slots=True)
class Comparison:
    """One primary/candidate pair judged on every dimension that applies."""

    status_equal: bool
    schema_equal: bool | None
    fields_equal: bool | None
    length_ratio: float | None
    """Candidate text length over the primary's (``inf`` when only the primary had none)."""
    latency_ratio: float | None
    """Candidate seconds over the primary's."""
    similarity: float | None
    compared: frozenset[str]
    """Dimensions judged for this pair."""
    differs: frozenset[str]
    """Dimensions judged different (a subset of ``compared``)."""


def compare(
    primary: Observed,
    candidate: Observed,
    *,
    ignore: Iterable[str] = DEFAULT_IGNORED_FIELDS,
    tolerances: Tolerances = Tolerances(),
) -> Comparison:
    """Judge ``candidate`` against ``primary``."""
    ignored = frozenset(ignore)
    compared = {"status"}
    differs: set[str] = set()
    status_equal = primary.status == candidate.status
    if not status_equal:
        differs.add("status")
    latency_ratio = None
    if primary.latency > 0 and candidate.latency > 0:
        latency_ratio = candidate.latency / primary.latency
        compared.add("latency")
        if _beyond(latency_ratio, tolerances.max_latency_ratio):
            differs.add("latency")
    a, b = _json(primary), _json(candidate)
    schema_equal = fields_equal = None
    length_ratio = similarity = None
    if a is not None or b is not None:
        compared.update(("schema", "fields"))
        schema_equal = a is not None and b is not None and _shape(a, ignored) == _shape(b, ignored)
        fields_equal = a is not None and b is not None and _strip(a, ignored) == _strip(b, ignored)
        if not schema_equal:
            differs.add("schema")
        if not fields_equal:
            differs.add("fields")
        ta = _text(a) if a is not None else None
        tb = _text(b) if b is not None else None
        if ta is not None or tb is not None:
            compared.update(("length", "text"))
            length_ratio = _length_ratio(ta or "", tb or "") if ta is not None else math.inf
            similarity = text_similarity(ta, tb) if ta is not None and tb is not None else 0.0
            if _beyond(length_ratio, tolerances.max_length_ratio):
                differs.add("length")
            if similarity < tolerances.min_similarity:
                differs.add("text")
    return Comparison(
        status_equal=status_equal,
        schema_equal=schema_equal,
        fields_equal=fields_equal,
        length_ratio=length_ratio,
        latency_ratio=latency_ratio,
        similarity=similarity,
        compared=frozenset(compared),
        differs=frozenset(differs),
    )


def text_similarity(a: str, b: str) -> float:
    """Weighted Jaccard of lowercased word tokens: 1.0 same bag of words, 0.0 none shared."""
    ca = Counter(_WORD.findall(a.lower()))
    cb = Counter(_WORD.findall(b.lower()))
    if not ca and not cb:
        return 1.0
    common = sum((ca & cb).values())
    union = sum((ca | cb).values())
    return common / union


def _beyond(ratio: float, limit: float) -> bool:
    """A ratio differs when it is further than ``limit`` from 1 either way."""
    if ratio == 0 or math.isinf(ratio):
        return True
    return max(ratio, 1.0 / ratio) > limit


def _length_ratio(a: str, b: str) -> float:
    if not a:
        return 1.0 if not b else math.inf
    return len(b) / len(a)


def _json(observed: Observed) -> Any:
    if observed.status == 0 or not observed.body:
        return None
    try:
        return orjson.loads(observed.body)
    except orjson.JSONDecodeError:
        return None


def _shape(value: Any, ignored: frozenset[str]) -> Any:
    """A hashable description of the JSON shape: keys and value types, not values."""
    if isinstance(value, dict):
        return (
            "object",
            tuple(sorted((k, _shape(v, ignored)) for k, v in value.items() if k not in ignored)),
        )
    if isinstance(value, list):
        return ("array", frozenset(_shape(v, ignored) for v in value))
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string"


def _strip(value: Any, ignored: frozenset[str]) -> Any:
    """``value`` without ignored fields and generated content, for comparing the rest."""
    if isinstance(value, dict):
        return {
            k: _strip(v, ignored)
            for k, v in value.items()
            if k not in ignored and k not in _CONTENT_KEYS
        }
    if isinstance(value, list):
        return [_strip(v, ignored) for v in value]
    return value


def _text(body: Any) -> str | None:
    """The generated text of a chat or completions answer (all choices), None if it has none."""
    if not isinstance(body, dict):
        return None
    choices = body.get("choices")
    if not isinstance(choices, list):
        return None
    parts: list[str] = []
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        if isinstance(message, dict):
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            calls = message.get("tool_calls")
            if calls:
                parts.append(orjson.dumps(calls).decode())
        text = choice.get("text")
        if isinstance(text, str):
            parts.append(text)
    return "\n".join(parts)


class DiffCounters:
    """How often each dimension differed over many comparisons, and the mean ratios."""

    __slots__ = ("_latency_logs", "_length_logs", "compared", "comparisons", "differed")

    def __init__(self) -> None:
        self.comparisons = 0
        self.compared = dict.fromkeys(DIMENSIONS, 0)
        self.differed = dict.fromkeys(DIMENSIONS, 0)
        self._latency_logs: list[float] = [0.0, 0.0]  # sum of log ratios, count
        self._length_logs: list[float] = [0.0, 0.0]

    def add(self, comparison: Comparison) -> None:
        self.comparisons += 1
        for dimension in comparison.compared:
            self.compared[dimension] += 1
        for dimension in comparison.differs:
            self.differed[dimension] += 1
        _add_log(self._latency_logs, comparison.latency_ratio)
        _add_log(self._length_logs, comparison.length_ratio)

    def rates(self) -> dict[str, float | None]:
        """Per dimension, the share of judged pairs that differed (None: none judged)."""
        return {
            d: (self.differed[d] / self.compared[d] if self.compared[d] else None)
            for d in DIMENSIONS
        }

    def snapshot(self) -> dict[str, Any]:
        return {
            "comparisons": self.comparisons,
            "compared": dict(self.compared),
            "differed": dict(self.differed),
            "diff_rates": self.rates(),
            # Geometric means: a 2x and a 0.5x ratio average to 1x, as they should.
            "latency_ratio_mean": _geomean(self._latency_logs),
            "length_ratio_mean": _geomean(self._length_logs),
        }


def relative_rates(
    candidate: Mapping[str, float | None], noise: Mapping[str, float | None]
) -> dict[str, float | None]:
    """Candidate diff rate minus the noise floor, per dimension (None when either is unknown):
    about 0 means the candidate differs from stable no more than stable differs from itself."""
    out: dict[str, float | None] = {}
    for dimension in DIMENSIONS:
        c, n = candidate.get(dimension), noise.get(dimension)
        out[dimension] = None if c is None or n is None else c - n
    return out


def _add_log(acc: list[float], ratio: float | None) -> None:
    if ratio is not None and 0 < ratio < math.inf:
        acc[0] += math.log(ratio)
        acc[1] += 1


def _geomean(acc: list[float]) -> float | None:
    return math.exp(acc[0] / acc[1]) if acc[1] else None
