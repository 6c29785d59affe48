"""The shadow-traffic comparator, dimension by dimension, and its counters."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from headway.rollout import (
    DiffCounters,
    Observed,
    Tolerances,
    compare,
    relative_rates,
    text_similarity,
)


def chat(
    text: str = "the quick brown fox jumps over the lazy dog",
    *,
    rid: str = "chatcmpl-1",
    created: int = 1700000000,
    finish: str = "stop",
    **extra: Any,
) -> bytes:
    body = {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": "m",
        "system_fingerprint": None,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12},
        **extra,
    }
    return orjson.dumps(body)


def ok(body: bytes, latency: float = 0.1, status: int = 200) -> Observed:
    return Observed(status, body, latency)


def test_identical_answers_differ_nowhere_even_with_other_ids_and_times() -> None:
    result = compare(ok(chat()), ok(chat(rid="chatcmpl-2", created=1700000009)))
    assert result.differs == frozenset()
    assert result.compared == {"status", "schema", "fields", "length", "latency", "text"}
    assert result.similarity == 1.0
    assert result.length_ratio == 1.0
    assert result.latency_ratio == 1.0


def test_without_ignoring_ids_they_count_as_field_differences() -> None:
    result = compare(ok(chat()), ok(chat(rid="other")), ignore=())
    assert result.differs == {"fields"}


def test_status() -> None:
    error = orjson.dumps({"error": {"message": "boom", "type": "server_error"}})
    result = compare(ok(chat()), ok(error, status=500))
    assert not result.status_equal
    # A failed answer differs in every content dimension too: the user would see another one.
    assert {"status", "schema", "fields", "length", "text"} <= result.differs


def test_no_answer_at_all() -> None:
    result = compare(ok(chat()), Observed(0, b"", 2.0))
    assert "status" in result.differs
    assert "text" in result.differs
    assert result.similarity == 0.0


def test_schema_change_is_detected() -> None:
    result = compare(ok(chat()), ok(chat(extra_field=[1, 2])))
    assert result.schema_equal is False
    assert "schema" in result.differs
    # A value of another type at the same key is a schema change as well.
    body = orjson.loads(chat())
    body["usage"]["total_tokens"] = "12"
    assert "schema" in compare(ok(chat()), ok(orjson.dumps(body))).differs


def test_field_values_outside_the_content() -> None:
    result = compare(ok(chat()), ok(chat(finish="length")))
    assert result.differs == {"fields"}
    assert result.schema_equal is True


def test_length_and_text() -> None:
    primary = "one two three four five six seven eight nine ten"
    half = "one two three four five"
    result = compare(ok(chat(primary)), ok(chat(half)))
    assert result.length_ratio == pytest.approx(len(half) / len(primary))
    assert result.similarity == pytest.approx(0.5)
    assert {"length", "text"} <= result.differs
    # Within the tolerances, nothing differs.
    close = "one two three four five six seven eight nine eleven"
    near = compare(ok(chat(primary)), ok(chat(close)))
    assert near.similarity == pytest.approx(9 / 11)
    assert "text" not in near.differs
    assert "length" not in near.differs


def test_latency_either_way() -> None:
    assert "latency" in compare(ok(chat(), 0.1), ok(chat(), 0.25)).differs
    assert "latency" in compare(ok(chat(), 0.3), ok(chat(), 0.1)).differs
    assert "latency" not in compare(ok(chat(), 0.1), ok(chat(), 0.19)).differs
    loose = Tolerances(max_latency_ratio=3.0)
    assert "latency" not in compare(ok(chat(), 0.1), ok(chat(), 0.25), tolerances=loose).differs


def test_embeddings_have_no_text_to_compare() -> None:
    def embedding(vector: list[float]) -> bytes:
        return orjson.dumps(
            {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": vector}]}
        )

    result = compare(ok(embedding([0.1, 0.2])), ok(embedding([0.1, 0.3])))
    assert "text" not in result.compared
    assert "length" not in result.compared
    assert result.differs == frozenset()


def test_completions_text_and_non_json() -> None:
    def completion(text: str) -> bytes:
        return orjson.dumps({"id": "x", "choices": [{"text": text, "index": 0}]})

    assert compare(ok(completion("a b c")), ok(completion("a b c"))).differs == frozenset()
    assert "text" in compare(ok(completion("a b c")), ok(completion("x y z"))).differs
    broken = compare(ok(b"not json"), ok(b"{also not"))
    assert broken.compared == {"status", "latency"}


def test_text_similarity_known_values() -> None:
    assert text_similarity("", "") == 1.0
    assert text_similarity("a b", "") == 0.0
    assert text_similarity("A b, C!", "c b a") == 1.0  # case and punctuation do not count
    assert text_similarity("a a b", "a b b") == pytest.approx(2 / 4)  # multiset, not set
    assert text_similarity("x y", "z w") == 0.0


def test_counters_and_the_noise_floor() -> None:
    candidate, noise = DiffCounters(), DiffCounters()
    for i in range(10):
        other = "something else entirely"
        candidate.add(compare(ok(chat()), ok(chat(other) if i < 4 else chat())))
        noise.add(compare(ok(chat()), ok(chat(other) if i < 1 else chat())))
    rates = candidate.rates()
    assert rates["text"] == pytest.approx(0.4)
    assert noise.rates()["text"] == pytest.approx(0.1)
    assert rates["status"] == 0.0
    relative = relative_rates(rates, noise.rates())
    assert relative["text"] == pytest.approx(0.3)
    snapshot = candidate.snapshot()
    assert snapshot["comparisons"] == 10
    assert snapshot["latency_ratio_mean"] == pytest.approx(1.0)
    assert relative_rates(rates, DiffCounters().rates())["text"] is None
    assert DiffCounters().snapshot()["latency_ratio_mean"] is None


def test_geometric_mean_of_latency_ratios() -> None:
    counters = DiffCounters()
    counters.add(compare(ok(chat(), 0.1), ok(chat(), 0.2)))
    counters.add(compare(ok(chat(), 0.2), ok(chat(), 0.1)))
    assert counters.snapshot()["latency_ratio_mean"] == pytest.approx(1.0)
    assert not math.isnan(counters.snapshot()["length_ratio_mean"])
