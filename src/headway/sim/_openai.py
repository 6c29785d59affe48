"""OpenAI wire formats the simulator emits, byte-exact where clients parse them.

Stream chunks are assembled from pre-encoded prefixes and suffixes around the one JSON-encoded
token, so a streamed token costs one small ``orjson.dumps`` of a string and a concatenation.
Token text is a deterministic word sequence; prompt tokens are estimated as characters / 4.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import struct
from typing import Any

import orjson

__all__ = [
    "WORDS",
    "ChatChunks",
    "chat_completion",
    "completion",
    "embeddings",
    "estimate_tokens",
    "models_list",
    "token_text",
]

WORDS = (
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "simulated",
    "models",
    "answer",
    "every",
    "request",
    "with",
    "steady",
    "plausible",
    "text",
)


def token_text(index: int) -> str:
    """The ``index``-th generated token: a word with a leading space (none for the first)."""
    word = WORDS[index % len(WORDS)]
    return word if index == 0 else " " + word


def estimate_tokens(text_chars: int) -> int:
    """Rough token count from characters (OpenAI's rule of thumb: ~4 characters a token)."""
    return max(1, text_chars // 4)


def _text_chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_chars(v) for v in value)
    if isinstance(value, dict):
        # chat content parts ({"type": "text", "text": ...}) and messages ({"content": ...})
        return _text_chars(value.get("content")) + _text_chars(value.get("text"))
    if isinstance(value, int):
        return 4  # a pre-tokenised prompt: one token per integer
    return 0


def prompt_tokens(value: Any) -> int:
    return estimate_tokens(_text_chars(value))


def usage(prompt: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
    }


def chat_completion(
    rid: str, created: int, model: str, text: str, finish: str, prompt: int, n_out: int
) -> bytes:
    return orjson.dumps(
        {
            "id": rid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "usage": usage(prompt, n_out),
        }
    )


def completion(
    rid: str, created: int, model: str, text: str, finish: str, prompt: int, n_out: int
) -> bytes:
    return orjson.dumps(
        {
            "id": rid,
            "object": "text_completion",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
            "usage": usage(prompt, n_out),
        }
    )


class ChatChunks:
    """Encodes the SSE events of one streamed chat (or legacy completion) response."""

    __slots__ = ("_chat", "_head", "_tail", "_usage_tail", "include_usage")

    def __init__(self, rid: str, created: int, model: str, *, chat: bool, include_usage: bool):
        self._chat = chat
        self.include_usage = include_usage
        obj = "chat.completion.chunk" if chat else "text_completion"
        self._head = b'data: {"id":%b,"object":"%b","created":%d,"model":%b,' % (
            orjson.dumps(rid),
            obj.encode(),
            created,
            orjson.dumps(model),
        ) + (b'"system_fingerprint":null,"choices":[' if chat else b'"choices":[')
        self._usage_tail = b',"usage":null' if include_usage else b""
        self._tail = self._usage_tail + b"}\n\n"

    def first(self) -> bytes | None:
        """The role-announcing first chat chunk (legacy completions have none)."""
        if not self._chat:
            return None
        return (
            self._head
            + b'{"index":0,"delta":{"role":"assistant","content":"","refusal":null},'
            + b'"logprobs":null,"finish_reason":null}]'
            + self._tail
        )

    def token(self, text: str) -> bytes:
        if self._chat:
            return (
                self._head
                + b'{"index":0,"delta":{"content":'
                + orjson.dumps(text)
                + b'},"logprobs":null,"finish_reason":null}]'
                + self._tail
            )
        return (
            self._head
            + b'{"text":'
            + orjson.dumps(text)
            + b',"index":0,"logprobs":null,"finish_reason":null}]'
            + self._tail
        )

    def finish(self, reason: str) -> bytes:
        if self._chat:
            body = b'{"index":0,"delta":{},"logprobs":null,"finish_reason":"%b"}]' % reason.encode()
        else:
            body = b'{"text":"","index":0,"logprobs":null,"finish_reason":"%b"}]' % reason.encode()
        return self._head + body + self._tail

    def usage(self, prompt: int, n_out: int) -> bytes:
        return self._head + b'],"usage":' + orjson.dumps(usage(prompt, n_out)) + b"}\n\n"

    @staticmethod
    def malformed() -> bytes:
        return b'data: {"id":"broken","object":"chat.completion.chunk","choices":[{"delta":\n\n'

    @staticmethod
    def done() -> bytes:
        return b"data: [DONE]\n\n"


def embedding_vector(text: str, dims: int) -> list[float]:
    """A deterministic unit vector from a hash of the input: same text, same vector."""
    seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    rng = random.Random(seed)
    vec = [rng.gauss(0.0, 1.0) for _ in range(dims)]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [v / norm for v in vec]


def embedding_inputs(value: Any) -> list[str]:
    """Normalise OpenAI's input forms (str, [str], [int], [[int]]) to one string per item."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) for v in value):
            return [" ".join(map(str, value))]
        if all(isinstance(v, str) for v in value):
            return list(value)
        if all(isinstance(v, list) for v in value):
            return [" ".join(map(str, v)) for v in value]
    raise ValueError("input must be a string, a list of strings, or token arrays")


def embeddings(model: str, inputs: list[str], dims: int, encoding: str) -> bytes:
    data = []
    chars = 0
    for index, text in enumerate(inputs):
        vec = embedding_vector(text, dims)
        chars += len(text)
        item: Any
        if encoding == "base64":
            item = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
        else:
            item = vec
        data.append({"object": "embedding", "index": index, "embedding": item})
    tokens = estimate_tokens(chars)
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def models_list(models: tuple[str, ...], created: int) -> bytes:
    return orjson.dumps(
        {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": created, "owned_by": "headway-sim"}
                for m in models
            ],
        }
    )
