"""``extract_usage`` reads the same counts as a JSON parser would, however the answer is written.

Its flat-object reader (``_flat_usage``) finds the three counts by searching the bytes; these
properties hold it to orjson on answers and SSE events with usage objects of every shape: keys
in any order, spacing, extra fields (strings holding braces, quotes, brackets and the key names
themselves), nested details, nulls, floats and huge numbers.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from headway.gateway._openai import Usage, _usage_of, extract_usage

COUNT_KEYS = ["prompt_tokens", "completion_tokens", "total_tokens"]
PIECES = st.sampled_from(
    ["}", "{", "}{", '"', "[", "]", ":", ",", "\\", "prompt_tokens", '"total_tokens": 9', "x"]
)


def tricky_text(max_size: int) -> st.SearchStrategy[str]:
    return st.lists(PIECES, max_size=max_size).map("".join)


values = st.one_of(
    st.integers(0, 10**6),
    st.integers(-5, 2**63 - 1),  # orjson: 64-bit integers
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    tricky_text(4),
    st.booleans(),
)
extras = st.dictionaries(
    st.one_of(
        st.sampled_from(["note", "prompt_tokens_details", "cached_tokens", "x"]),
        tricky_text(3),
    ).filter(lambda k: k not in COUNT_KEYS),
    st.one_of(values, st.dictionaries(st.sampled_from(["cached_tokens"]), values, max_size=1)),
    max_size=3,
)


@st.composite
def usage_objects(draw: st.DrawFn) -> dict[str, Any]:
    usage: dict[str, Any] = {}
    for key in draw(st.permutations(COUNT_KEYS)):
        if draw(st.booleans()):
            usage[key] = draw(values)
    usage.update(draw(extras))
    keys = list(usage)
    return {k: usage[k] for k in draw(st.permutations(keys))}


def dumps(value: Any, style: int) -> bytes:
    if style == 0:
        return orjson.dumps(value)
    if style == 1:
        return json.dumps(value).encode()  # ", " and ": "
    return json.dumps(value, indent=1).encode()  # newlines


def expected(usage: Any) -> Usage | None:
    return _usage_of(orjson.loads(orjson.dumps(usage)))


@settings(max_examples=400, deadline=None)
@given(usage=usage_objects(), style=st.integers(0, 2), content=tricky_text(5))
def test_a_whole_answer(usage: dict[str, Any], style: int, content: str) -> None:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
        "usage": usage,
    }
    assert extract_usage(dumps(body, style)) == expected(usage)


@settings(max_examples=300, deadline=None)
@given(usage=usage_objects(), content=tricky_text(5))
def test_the_last_event_of_a_stream(usage: dict[str, Any], content: str) -> None:
    delta = {"choices": [{"index": 0, "delta": {"content": content}}], "usage": None}
    last = {"choices": [], "usage": usage}
    data = b"data: " + orjson.dumps(delta) + b"\n\ndata: " + orjson.dumps(last) + b"\n\n"
    assert extract_usage(data) == expected(usage)


def test_the_flat_reader_is_what_reads_a_plain_answer() -> None:
    """Not the parser's fallback: the plain case is the point of the fast path."""
    from headway.gateway import _openai

    body = b'{"id":"x","usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21}}'
    assert _openai._flat_usage(body, body.index(b'"usage"')) == Usage(12, 9, 21)
    spaced = b'{"usage" : { "completion_tokens" : 9 ,\n "prompt_tokens": 12 } }'
    assert _openai._flat_usage(spaced, spaced.index(b'"usage"')) == Usage(12, 9, 21)
    nested = b'{"usage":{"prompt_tokens":1,"prompt_tokens_details":{"cached_tokens":0}}}'
    assert _openai._flat_usage(nested, nested.index(b'"usage"')) is _openai._NOT_FLAT
