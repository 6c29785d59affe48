"""OpenAI request bodies in, upstream bodies out, token usage read back.

What it guarantees:
- :func:`parse_body` refuses (with :class:`BadRequest` naming the ``param``) only what would
  crash or mislead the gateway: bad JSON, a non-object body, a missing or non-string ``model``,
  missing/ill-typed ``messages``/``prompt``/``input``, and ill-typed fields the gateway reads
  (``stream``, ``stream_options``, ``max_tokens``/``max_completion_tokens``, ``n``,
  ``temperature``, ``seed``, ``user``). Everything else passes through untouched for the
  upstream to judge.
- :func:`rewrite_model` changes nothing but ``model`` (and, when asked, forces
  ``stream_options.include_usage`` so tokens can be accounted); when nothing changes it returns
  the client's original bytes (no copy, no re-serialisation).
- :func:`extract_usage` reads ``usage`` without parsing whole bodies when it can.

The prompt token estimate is deliberately cheap and tokenizer-free: characters / 4, rounded up
(OpenAI's rule of thumb: "one token is ~4 characters of English text"), over every message's
text content (string or text parts), the completion prompt or the embedding input; token-id
arrays count exactly (one id, one token). It is only the up-front charge for the token quota;
the real ``usage`` corrects it afterwards.
"""

from __future__ import annotations

from typing import Any, Final, Literal, NamedTuple

import orjson

from headway.core import chained

from ._errors import BadRequest

__all__ = [
    "Endpoint",
    "ParsedRequest",
    "Usage",
    "extract_usage",
    "is_deterministic",
    "is_usage_only_chunk",
    "needs_usage",
    "parse_body",
    "rewrite_model",
]

Endpoint = Literal["chat", "completions", "embeddings"]


class ParsedRequest:
    """A validated request body and what the gateway needs to know about it."""

    def __init__(
        self,
        raw: bytes,
        body: dict[str, Any],
        endpoint: Endpoint,
        model: str,
        stream: bool,
        max_tokens: int | None,
        n: int,
        user: str | None,
        include_usage: bool,
        estimated_prompt_tokens: int,
    ) -> None:
        #: The client's bytes, as received.
        self.raw = raw
        #: The parsed body (treat as read-only: :func:`rewrite_model` relies on it).
        self.body = body
        self.endpoint = endpoint
        self.model = model
        self.stream = stream
        #: ``max_completion_tokens`` or else ``max_tokens``; None when unbounded.
        self.max_tokens = max_tokens
        #: Choices requested (``n``, default 1).
        self.n = n
        self.user = user
        #: Whether the client asked for a usage chunk at the end of a stream.
        self.include_usage = include_usage
        self.estimated_prompt_tokens = estimated_prompt_tokens

    def __repr__(self) -> str:
        return (
            f"ParsedRequest({self.endpoint}, model={self.model!r}, stream={self.stream}, "
            f"prompt~{self.estimated_prompt_tokens} tokens)"
        )


class Usage(NamedTuple):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


# -- parsing ---------------------------------------------------------------------------------------


def parse_body(raw: bytes, endpoint: Endpoint) -> ParsedRequest:
    """Parse and check a request body for ``endpoint``; raise :class:`BadRequest` otherwise."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        error = BadRequest("could not parse the request body as JSON", reason="invalid_json")
        raise chained(error, None)  # noqa: B904 - is ``from None`` (mypyc drops ``from``)
    if type(body) is not dict:
        raise BadRequest("the request body must be a JSON object", reason="invalid_body")
    fields: dict[str, Any] = body  # typed: compiled, .get is the dict primitive, not a call
    model = fields.get("model")
    if type(model) is not str or not model:
        raise _missing_or_wrong(body, "model", "a non-empty string")
    if endpoint == "chat":
        chars, tokens = _chat_size(fields.get("messages"))
    elif endpoint == "completions":
        chars, tokens = _input_size(fields.get("prompt"), "prompt")
    else:
        chars, tokens = _input_size(fields.get("input"), "input")

    stream = fields.get("stream")
    if stream is None:
        stream = False
    elif type(stream) is not bool:
        raise _wrong("stream", "a boolean")
    include_usage = False
    options = fields.get("stream_options")
    if options is not None:
        if type(options) is not dict:
            raise _wrong("stream_options", "an object")
        flag = options.get("include_usage")
        if flag is not None:
            if type(flag) is not bool:
                raise _wrong("stream_options.include_usage", "a boolean")
            include_usage = flag
    max_tokens = fields.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = fields.get("max_tokens")
        if max_tokens is not None and (type(max_tokens) is not int or max_tokens < 1):
            raise _wrong("max_tokens", "a positive integer")
    elif type(max_tokens) is not int or max_tokens < 1:
        raise _wrong("max_completion_tokens", "a positive integer")
    n = fields.get("n")
    if n is None:
        n = 1
    elif type(n) is not int or n < 1:
        raise _wrong("n", "a positive integer")
    temperature = fields.get("temperature")
    if temperature is not None and type(temperature) is not float and type(temperature) is not int:
        raise _wrong("temperature", "a number")
    seed = fields.get("seed")
    if seed is not None and type(seed) is not int:
        raise _wrong("seed", "an integer")
    user = fields.get("user")
    if user is not None and type(user) is not str:
        raise _wrong("user", "a string")
    return ParsedRequest(
        raw,
        body,
        endpoint,
        model,
        stream,
        max_tokens,
        n,
        user,
        include_usage,
        tokens + (chars + 3) // 4,
    )


def _wrong(param: str, expected: str) -> BadRequest:
    return BadRequest(f"'{param}' must be {expected}", param=param, reason="invalid_field")


def _missing_or_wrong(body: dict[str, Any], param: str, expected: str) -> BadRequest:
    if body.get(param) is None:
        return BadRequest(f"missing required parameter '{param}'", param=param, reason="missing")
    return _wrong(param, expected)


def _chat_size(messages: object) -> tuple[int, int]:
    """Characters of text in ``messages`` (and token ids: none in chat), checking its shape."""
    if type(messages) is not list:
        if messages is None:
            raise BadRequest(
                "missing required parameter 'messages'", param="messages", reason="missing"
            )
        raise _wrong("messages", "an array of message objects")
    if not messages:
        raise _wrong("messages", "a non-empty array of message objects")
    chars = 0
    for i, message in enumerate(messages):
        if type(message) is not dict:
            raise _wrong(f"messages[{i}]", "an object with a 'role'")
        if type(message.get("role")) is not str:
            raise _wrong(f"messages[{i}].role", "a string")
        content = message.get("content")
        if type(content) is str:
            chars += len(content)
        elif type(content) is list:
            for part in content:
                if type(part) is dict:
                    text = part.get("text")
                    if type(text) is str:
                        chars += len(text)
        elif content is not None:
            raise _wrong(f"messages[{i}].content", "a string or an array of content parts")
    return chars, 0


def _input_size(value: object, param: str) -> tuple[int, int]:
    """(characters, token ids) of a completion prompt or embedding input: a string, an array
    of strings, an array of token ids, or an array of token-id arrays."""
    if type(value) is str:
        return len(value), 0
    if type(value) is not list:
        if value is None:
            raise BadRequest(f"missing required parameter '{param}'", param=param, reason="missing")
        raise _wrong(param, "a string or an array")
    chars = tokens = 0
    for item in value:
        kind = type(item)
        if kind is str:
            chars += len(item)
        elif kind is int:
            tokens += 1
        elif kind is list:
            tokens += len(item)
        else:
            raise _wrong(param, "a string, an array of strings, or an array of token ids")
    return chars, tokens


# -- rewriting -------------------------------------------------------------------------------------

_INCLUDE_USAGE: Final = {"include_usage": True}


def needs_usage(parsed: ParsedRequest) -> bool:
    """Whether the gateway must ask the upstream for a usage chunk the client did not ask for
    (a stream without ``stream_options.include_usage``); the gateway then drops that chunk."""
    return parsed.stream and not parsed.include_usage


def rewrite_model(
    parsed: ParsedRequest, upstream_model: str, *, force_usage: bool = False
) -> bytes:
    """The body to send upstream: the client's, with ``model`` set to ``upstream_model`` and,
    with ``force_usage`` on a stream that did not ask for it, ``stream_options.include_usage``
    set. Returns ``parsed.raw`` itself when nothing changes."""
    inject = force_usage and parsed.stream and not parsed.include_usage
    if upstream_model == parsed.model and not inject:
        return parsed.raw
    body = parsed.body
    # Change in place, serialise, restore: no copy of the dict, and `parsed` is unchanged for
    # the next attempt (a fallback model, a retry). Nothing awaits in between.
    body["model"] = upstream_model
    if not inject:
        try:
            return orjson.dumps(body)
        finally:
            body["model"] = parsed.model
    had_options = "stream_options" in body
    options = body.get("stream_options")
    body["stream_options"] = _INCLUDE_USAGE if options is None else {**options, **_INCLUDE_USAGE}
    try:
        return orjson.dumps(body)
    finally:
        body["model"] = parsed.model
        if had_options:
            body["stream_options"] = options
        else:
            del body["stream_options"]


def is_deterministic(parsed: ParsedRequest) -> bool:
    """Whether an exact-match cache may answer this request: embeddings always; completions
    when not streamed and pinned by ``temperature == 0`` or a ``seed``."""
    if parsed.endpoint == "embeddings":
        return True
    if parsed.stream:
        return False
    body = parsed.body
    return body.get("temperature") == 0 or body.get("seed") is not None


# -- usage -----------------------------------------------------------------------------------------

_USAGE_KEY: Final = b'"usage"'


def extract_usage(data: bytes) -> Usage | None:
    """The token ``usage`` in a non-stream response body or in complete SSE event(s) (the last
    one that has it); None when absent or ``null``.

    Cheap by construction: data without a non-null ``"usage"`` is never parsed. The usage
    object (found from the end, where OpenAI-compatible servers put it) is read directly when
    it is flat (:func:`_flat_usage`: a few searches, no parser, no objects); otherwise an SSE
    event is parsed alone, a body up to 16 KiB whole, a larger one (embeddings) only from its
    ``usage`` object, falling back to the whole body if that slice fails.
    """
    at = _usage_at(data)
    if at < 0:
        return None
    flat = _flat_usage(data, at)
    if flat is not _NOT_FLAT:
        return flat
    if data.startswith(b"{") and len(data) <= _WHOLE_BODY_MAX:
        # A whole response body (the common non-stream case): no SSE framing to look for.
        return _body_usage(data)
    start = data.rfind(b"\ndata:", 0, at) + 1
    if start == 0 and not data.startswith(b"data:"):
        if len(data) > _WHOLE_BODY_MAX:
            return _large_body_usage(data, at)
        return _body_usage(data)
    end = data.find(b"\n", at)
    try:
        event = orjson.loads(data[start + 5 : None if end < 0 else end])
    except orjson.JSONDecodeError:
        return None
    return _usage_of(event.get("usage") if type(event) is dict else None)


def is_usage_only_chunk(data: bytes) -> bool:
    """Whether ``data`` is the SSE event a stream sends for ``include_usage`` alone: empty
    ``choices`` and a non-null ``usage`` (the chunk the gateway drops when it forced usage)."""
    if _usage_at(data) < 0:
        return False
    start = data.find(b"data:")
    if start < 0:
        return False
    try:
        event = orjson.loads(data[start + 5 :].strip())
    except orjson.JSONDecodeError:
        return False
    return (
        type(event) is dict
        and not event.get("choices")
        and _usage_of(event.get("usage")) is not None
    )


def _usage_at(data: bytes) -> int:
    """Index of the last ``"usage"`` key whose value is not ``null``, else -1."""
    end = len(data)
    while True:
        at = data.rfind(_USAGE_KEY, 0, end)
        if at < 0:
            return -1
        # Skip `\"usage\"` inside a string value (escaped quote before it), and null values.
        if (at == 0 or data[at - 1] != 0x5C) and not _null_after(data, at + 7):  # backslash
            return at
        end = at


_NOT_FLAT: Final = Usage(-1, -1, -1)
_QUOTE: Final = 0x22
_COLON: Final = 0x3A
_COMMA: Final = 0x2C
_OPEN: Final = 0x7B
_CLOSE: Final = 0x7D


def _flat_usage(data: bytes, at: int) -> Usage | None:
    """The usage object whose key is at ``at``, read by a small scanner when it is flat (no
    object or array inside, no escape in a name or string, no negative number): the last
    integer given for each count, as a JSON parser's dict holds it. Else :data:`_NOT_FLAT`,
    and a parser reads it.

    Compiled, it costs a few hundred instructions: it walks the bytes as ints (plain C
    comparisons), where parsing a whole answer to read three numbers cost about a microsecond
    and a half, and ``bytes.find`` with bounds a thousand instructions a call."""
    size = len(data)
    i = _skip_spaces(data, at + 7, size)  # 7: len(b'"usage"')
    if i >= size or data[i] != _COLON:
        return _NOT_FLAT
    i = _skip_spaces(data, i + 1, size)
    if i >= size or data[i] != _OPEN:
        return _NOT_FLAT
    prompt = completion = total = -1  # -1: absent, or not an integer
    i = _skip_spaces(data, i + 1, size)
    if i < size and data[i] == _CLOSE:
        return _usage_from(0, 0, -1)
    while True:
        if i >= size or data[i] != _QUOTE:
            return _NOT_FLAT
        name_at = i + 1
        i = _string_end(data, name_at, size)
        if i < 0:
            return _NOT_FLAT
        name = data[name_at:i] if i - name_at in (12, 13, 17) else b""
        i = _skip_spaces(data, i + 1, size)
        if i >= size or data[i] != _COLON:
            return _NOT_FLAT
        i = _skip_spaces(data, i + 1, size)
        if i >= size:
            return _NOT_FLAT
        c = data[i]
        value = -1
        if 0x30 <= c <= 0x39:
            start = i
            value = 0
            while i < size and 0x30 <= data[i] <= 0x39:
                value = value * 10 + (data[i] - 0x30)
                i += 1
            if i - start > 18:  # past what every parser reads alike: let orjson decide
                return _NOT_FLAT
            if i < size and data[i] in (0x2E, 0x45, 0x65):  # ".", "E", "e": a float
                value = -1
                i = _literal_end(data, i, size)
        elif c == _QUOTE:
            i = _string_end(data, i + 1, size)
            if i < 0:
                return _NOT_FLAT
            i += 1
        elif c in (_OPEN, 0x5B, 0x2D):  # "{", "[" or "-": the parser decides
            return _NOT_FLAT
        else:  # null, true, false
            i = _literal_end(data, i, size)
        if name == b"prompt_tokens":
            prompt = value
        elif name == b"completion_tokens":
            completion = value
        elif name == b"total_tokens":
            total = value
        i = _skip_spaces(data, i, size)
        if i >= size:
            return _NOT_FLAT
        if data[i] == _CLOSE:
            return _usage_from(max(prompt, 0), max(completion, 0), total)
        if data[i] != _COMMA:
            return _NOT_FLAT
        i = _skip_spaces(data, i + 1, size)


def _string_end(data: bytes, i: int, end: int) -> int:
    """The index of the quote closing a string that starts at ``i``; -1 if it has an escape
    or does not end."""
    while i < end:
        c = data[i]
        if c == _QUOTE:
            return i
        if c == 0x5C:  # backslash
            return -1
        i += 1
    return -1


def _literal_end(data: bytes, i: int, end: int) -> int:
    """Where a bare value (a literal, the rest of a number) ends."""
    while i < end:
        c = data[i]
        if c in (_COMMA, _CLOSE, 0x20, 0x0A, 0x0D, 0x09):
            return i
        i += 1
    return end


def _null_after(data: bytes, i: int) -> bool:
    """Whether ``: null`` (any spacing) follows at ``i``; compared as ints, since a bounded
    ``bytes.startswith`` costs a thousand instructions a call."""
    size = len(data)
    i = _skip_spaces(data, i, size)
    if i >= size or data[i] != _COLON:
        return False
    i = _skip_spaces(data, i + 1, size)
    return (
        i + 3 < size
        and data[i] == 0x6E  # n
        and data[i + 1] == 0x75  # u
        and data[i + 2] == 0x6C  # l
        and data[i + 3] == 0x6C  # l
    )


def _skip_spaces(data: bytes, i: int, end: int) -> int:
    """The first index from ``i`` that is not JSON whitespace (``end`` if none)."""
    while i < end:
        c = data[i]
        if c not in (0x20, 0x0A, 0x0D, 0x09):  # JSON whitespace
            return i
        i += 1
    return end


# Measured: orjson parses a 500-byte completion in ~1 us, less than finding and slicing the
# usage object in Python; the slice pays off only on large bodies (embedding vectors).
_WHOLE_BODY_MAX: Final = 16384


def _body_usage(data: bytes) -> Usage | None:
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return _usage_of(body.get("usage") if type(body) is dict else None)


def _large_body_usage(data: bytes, at: int) -> Usage | None:
    brace = data.find(b"{", at)
    close = data.find(b"}", brace)
    # The usage object may nest (prompt_tokens_details): every "{" met before the candidate
    # closing brace needs one more "}".
    nested = data.find(b"{", brace + 1, close)
    while nested >= 0 and close >= 0:
        close = data.find(b"}", close + 1)
        nested = data.find(b"{", nested + 1, close)
    if brace >= 0 and close >= 0:
        try:
            usage = _usage_of(orjson.loads(data[brace : close + 1]))
        except orjson.JSONDecodeError:
            usage = None
        if usage is not None:
            return usage
    return _body_usage(data)


def _usage_of(usage: object) -> Usage | None:
    if type(usage) is not dict:
        return None
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    total = usage.get("total_tokens")
    return _usage_from(
        prompt if type(prompt) is int else 0,
        completion if type(completion) is int else 0,  # embeddings report no completion tokens
        total if type(total) is int else -1,
    )


def _usage_from(prompt: int, completion: int, total: int) -> Usage | None:
    """``total`` -1: not reported, derived (None when nothing at all was counted)."""
    if total == -1:
        if prompt == 0 and completion == 0:
            return None
        total = prompt + completion
    return _new(Usage, (prompt, completion, total))


# Building the tuple directly skips NamedTuple's Python-level __new__.
_new: Final = tuple.__new__
