"""OpenAI request bodies: validation with the right ``param``, model rewrite, usage extraction."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from headway.gateway._errors import BadRequest
from headway.gateway._openai import (
    Endpoint,
    Usage,
    extract_usage,
    is_deterministic,
    is_usage_only_chunk,
    needs_usage,
    parse_body,
    rewrite_model,
)

CHAT: dict[str, Any] = {
    "model": "sim-small",
    "messages": [
        {"role": "system", "content": "Be brief."},  # 9 chars
        {"role": "user", "content": [{"type": "text", "text": "Hello there"}]},  # 11 chars
        {"role": "assistant", "content": None, "tool_calls": []},
    ],
    "temperature": 0.7,
}


def raw(body: object) -> bytes:
    return orjson.dumps(body)


def test_parses_a_chat_body() -> None:
    parsed = parse_body(raw(CHAT), "chat")
    assert parsed.model == "sim-small"
    assert parsed.stream is False
    assert parsed.max_tokens is None
    assert parsed.n == 1
    assert parsed.user is None
    assert parsed.include_usage is False
    assert parsed.estimated_prompt_tokens == 5  # ceil(20 / 4)
    assert parsed.body == CHAT
    assert parsed.endpoint == "chat"


def test_reads_the_fields_the_gateway_uses() -> None:
    body = {
        **CHAT,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 100,
        "n": 2,
        "user": "alice",
    }
    parsed = parse_body(raw(body), "chat")
    assert (parsed.stream, parsed.include_usage, parsed.max_tokens, parsed.n, parsed.user) == (
        True,
        True,
        100,
        2,
        "alice",
    )
    # max_completion_tokens (the newer name) wins over max_tokens.
    parsed = parse_body(raw({**body, "max_completion_tokens": 7}), "chat")
    assert parsed.max_tokens == 7


def test_nulls_mean_absent() -> None:
    body = {**CHAT, "stream": None, "max_tokens": None, "n": None, "stream_options": None}
    parsed = parse_body(raw(body), "chat")
    assert (parsed.stream, parsed.max_tokens, parsed.n, parsed.include_usage) == (
        False,
        None,
        1,
        False,
    )


@pytest.mark.parametrize(
    ("endpoint", "field", "value", "tokens"),
    [
        ("completions", "prompt", "abcdefghi", 3),  # ceil(9 / 4)
        ("completions", "prompt", ["abcd", "efgh"], 2),
        ("completions", "prompt", [1, 2, 3, 4, 5], 5),  # token ids count exactly
        ("completions", "prompt", [[1, 2], [3, 4, 5]], 5),
        ("embeddings", "input", "x" * 401, 101),
        ("embeddings", "input", ["ab", "cd", "e"], 2),
        ("embeddings", "input", [], 0),
    ],
)
def test_prompt_estimates(endpoint: Endpoint, field: str, value: object, tokens: int) -> None:
    parsed = parse_body(raw({"model": "m", field: value}), endpoint)
    assert parsed.estimated_prompt_tokens == tokens


def test_unicode_counts_characters_not_bytes() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "héllo wörld"}]}
    assert parse_body(raw(body), "chat").estimated_prompt_tokens == 3  # 11 chars


def test_unknown_fields_pass_through_untouched() -> None:
    body = {**CHAT, "tools": [{"type": "function"}], "logit_bias": {"50256": -100}, "x": [1]}
    parsed = parse_body(raw(body), "chat")
    assert parsed.body == body


BAD: list[tuple[Endpoint, bytes, str | None]] = [
    ("chat", b"{not json", None),
    ("chat", b"", None),
    ("chat", b"[1, 2]", None),
    ("chat", b'"model"', None),
    ("chat", b"null", None),
    ("chat", raw({"messages": CHAT["messages"]}), "model"),
    ("chat", raw({"model": None, "messages": CHAT["messages"]}), "model"),
    ("chat", raw({"model": 3, "messages": CHAT["messages"]}), "model"),
    ("chat", raw({"model": "", "messages": CHAT["messages"]}), "model"),
    ("chat", raw({"model": "m"}), "messages"),
    ("chat", raw({"model": "m", "messages": "hi"}), "messages"),
    ("chat", raw({"model": "m", "messages": []}), "messages"),
    ("chat", raw({"model": "m", "messages": ["hi"]}), "messages[0]"),
    (
        "chat",
        raw({"model": "m", "messages": [{"role": "user"}, {"content": "x"}]}),
        "messages[1].role",
    ),
    ("chat", raw({"model": "m", "messages": [{"role": 1, "content": "x"}]}), "messages[0].role"),
    (
        "chat",
        raw({"model": "m", "messages": [{"role": "user", "content": 5}]}),
        "messages[0].content",
    ),
    ("completions", raw({"model": "m"}), "prompt"),
    ("completions", raw({"model": "m", "prompt": 5}), "prompt"),
    ("completions", raw({"model": "m", "prompt": [{"a": 1}]}), "prompt"),
    ("embeddings", raw({"model": "m"}), "input"),
    ("embeddings", raw({"model": "m", "input": {"text": "x"}}), "input"),
    ("embeddings", raw({"model": "m", "input": [1.5]}), "input"),
    ("chat", raw({**CHAT, "stream": "true"}), "stream"),
    ("chat", raw({**CHAT, "stream": 1}), "stream"),
    ("chat", raw({**CHAT, "stream_options": True}), "stream_options"),
    (
        "chat",
        raw({**CHAT, "stream_options": {"include_usage": "yes"}}),
        "stream_options.include_usage",
    ),
    ("chat", raw({**CHAT, "max_tokens": 0}), "max_tokens"),
    ("chat", raw({**CHAT, "max_tokens": -5}), "max_tokens"),
    ("chat", raw({**CHAT, "max_tokens": 1.5}), "max_tokens"),
    ("chat", raw({**CHAT, "max_tokens": "100"}), "max_tokens"),
    ("chat", raw({**CHAT, "max_tokens": True}), "max_tokens"),
    ("chat", raw({**CHAT, "max_completion_tokens": 0}), "max_completion_tokens"),
    ("chat", raw({**CHAT, "n": 0}), "n"),
    ("chat", raw({**CHAT, "n": "2"}), "n"),
    ("chat", raw({**CHAT, "temperature": "hot"}), "temperature"),
    ("chat", raw({**CHAT, "temperature": False}), "temperature"),
    ("chat", raw({**CHAT, "seed": 1.5}), "seed"),
    ("chat", raw({**CHAT, "user": 42}), "user"),
]


@pytest.mark.parametrize(("endpoint", "body", "param"), BAD)
def test_bad_bodies_name_their_param(endpoint: Endpoint, body: bytes, param: str | None) -> None:
    with pytest.raises(BadRequest) as info:
        parse_body(body, endpoint)
    assert info.value.param == param
    assert info.value.status == 400
    assert str(info.value)  # says what is wrong
    if param is not None:
        assert param in str(info.value)


def test_missing_and_wrong_are_told_apart() -> None:
    with pytest.raises(BadRequest, match="missing required parameter 'model'"):
        parse_body(raw({"messages": []}), "chat")
    with pytest.raises(BadRequest, match="'model' must be a non-empty string"):
        parse_body(raw({"model": 1}), "chat")
    with pytest.raises(BadRequest, match="could not parse the request body as JSON"):
        parse_body(b"{", "chat")


def test_temperature_accepts_ints_and_floats() -> None:
    assert parse_body(raw({**CHAT, "temperature": 0}), "chat").body["temperature"] == 0
    assert parse_body(raw({**CHAT, "temperature": 1.0}), "chat").body["temperature"] == 1.0


# -- rewriting -----------------------------------------------------------------------------------


def test_unchanged_model_returns_the_original_bytes() -> None:
    original = b'{"model":  "sim-small", "messages": [{"role":"user","content":"hi"}]}'
    parsed = parse_body(original, "chat")
    assert rewrite_model(parsed, "sim-small") is original


def test_rewrite_changes_only_the_model_and_keeps_key_order() -> None:
    body = {"stream": False, "model": "alias", **{k: v for k, v in CHAT.items() if k != "model"}}
    parsed = parse_body(raw(body), "chat")
    out = rewrite_model(parsed, "upstream-7b")
    assert orjson.loads(out) == {**body, "model": "upstream-7b"}
    assert list(orjson.loads(out)) == list(body)
    # The parsed request is left as it was, for the next attempt.
    assert parsed.body == body
    assert parsed.model == "alias"
    assert orjson.loads(rewrite_model(parsed, "other"))["model"] == "other"


def test_force_usage_on_a_stream_that_did_not_ask() -> None:
    body = {**CHAT, "stream": True}
    parsed = parse_body(raw(body), "chat")
    assert needs_usage(parsed)
    out = orjson.loads(rewrite_model(parsed, "sim-small", force_usage=True))
    assert out == {**body, "stream_options": {"include_usage": True}}
    assert "stream_options" not in parsed.body  # restored
    # With existing options: merged, the client's other options kept.
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": False, "x": 1}}
    parsed = parse_body(raw(body), "chat")
    out = orjson.loads(rewrite_model(parsed, "up", force_usage=True))
    assert out["stream_options"] == {"include_usage": True, "x": 1}
    assert out["model"] == "up"
    assert parsed.body["stream_options"] == {"include_usage": False, "x": 1}


def test_force_usage_is_a_no_op_when_not_needed() -> None:
    streamed = parse_body(
        raw({**CHAT, "stream": True, "stream_options": {"include_usage": True}}), "chat"
    )
    assert not needs_usage(streamed)
    assert rewrite_model(streamed, "sim-small", force_usage=True) is streamed.raw
    plain = parse_body(raw(CHAT), "chat")
    assert not needs_usage(plain)
    assert rewrite_model(plain, "sim-small", force_usage=True) is plain.raw


# -- determinism ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "body", "deterministic"),
    [
        ("embeddings", {"model": "m", "input": "x"}, True),
        ("chat", {**CHAT, "temperature": 0}, True),
        ("chat", {**CHAT, "temperature": 0.0}, True),
        ("chat", {**CHAT, "seed": 7}, True),
        ("chat", CHAT, False),
        ("chat", {k: v for k, v in CHAT.items() if k != "temperature"}, False),
        ("chat", {**CHAT, "temperature": 0, "stream": True}, False),
        ("completions", {"model": "m", "prompt": "x", "temperature": 0}, True),
    ],
)
def test_is_deterministic(endpoint: Endpoint, body: dict[str, Any], deterministic: bool) -> None:
    assert is_deterministic(parse_body(raw(body), endpoint)) is deterministic


# -- usage ---------------------------------------------------------------------------------------

# Verbatim shapes of OpenAI's chat completion stream with include_usage (every chunk carries
# "usage": null, the last one has empty choices and the usage).
DELTA_CHUNK = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"gpt-4o-mini","system_fingerprint":"fp_1","choices":[{"index":0,"delta":'
    b'{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
)
USAGE_CHUNK = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"gpt-4o-mini","system_fingerprint":"fp_1","choices":[],"usage":{"prompt_tokens":'
    b'12,"completion_tokens":5,"total_tokens":17,"prompt_tokens_details":{"cached_tokens":0},'
    b'"completion_tokens_details":{"reasoning_tokens":0}}}\n\n'
)
BODY = orjson.dumps(
    {
        "id": "chatcmpl-2",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": 'He said "usage": 1'},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 9,
            "completion_tokens": 12,
            "total_tokens": 21,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        },
    }
)


def test_usage_from_the_final_stream_chunk() -> None:
    assert extract_usage(USAGE_CHUNK) == Usage(12, 5, 17)
    assert extract_usage(USAGE_CHUNK.replace(b"\n\n", b"\r\n\r\n")) == Usage(12, 5, 17)


def test_no_usage_in_ordinary_chunks() -> None:
    assert extract_usage(DELTA_CHUNK) is None
    assert extract_usage(DELTA_CHUNK.replace(b',"usage":null', b"")) is None
    assert extract_usage(DELTA_CHUNK.replace(b'"usage":null', b'"usage": null')) is None
    assert extract_usage(b"data: [DONE]\n\n") is None


def test_usage_from_several_events_in_one_read() -> None:
    data = DELTA_CHUNK + USAGE_CHUNK + b"data: [DONE]\n\n"
    assert extract_usage(data) == Usage(12, 5, 17)


def test_usage_from_a_non_stream_body() -> None:
    # The escaped "usage" inside the message content is not mistaken for the key.
    assert extract_usage(BODY) == Usage(9, 12, 21)
    assert extract_usage(b'{"id": "x", "usage": null}') is None
    assert extract_usage(b'{"id": "x"}') is None
    assert extract_usage(b'not json but has "usage": {') is None


def test_usage_from_a_large_embeddings_body() -> None:
    body = orjson.dumps(
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": [0.001 * j for j in range(1536)]}
                for i in range(4)
            ],
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 8, "total_tokens": 8},
        }
    )
    assert len(body) > 16384
    assert extract_usage(body) == Usage(8, 0, 8)


def test_large_body_with_unparseable_usage_slice_falls_back_to_whole_parse() -> None:
    # A brace inside a string in the usage object breaks the slice; the fallback still works.
    body = orjson.dumps({"pad": "x" * 20000, "usage": {"note": "}{", "prompt_tokens": 3}})
    assert extract_usage(body) == Usage(3, 0, 3)


def test_total_is_derived_when_missing() -> None:
    assert extract_usage(b'{"usage": {"prompt_tokens": 2, "completion_tokens": 3}}') == Usage(
        2, 3, 5
    )


def test_is_usage_only_chunk() -> None:
    assert is_usage_only_chunk(USAGE_CHUNK)
    assert not is_usage_only_chunk(DELTA_CHUNK)
    assert not is_usage_only_chunk(b"data: [DONE]\n\n")
    # A final chunk that still has choices is content, not the usage-only chunk.
    with_choice = USAGE_CHUNK.replace(
        b'"choices":[]', b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]'
    )
    assert not is_usage_only_chunk(with_choice)
