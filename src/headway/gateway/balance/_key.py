"""Affinity keys from a request's prompt: requests that share a prompt prefix share a key.

A model server can reuse the KV cache of a prefix it has seen. In a chat, the system prompt and
the first user message stay the same on every turn, so a key built from the first ``chars``
characters of them sends a whole conversation to one server, and requests sharing a long system
prompt to the same one. Guarantees: stable across processes and runs (BLAKE2b, never Python's
salted ``hash()``); roles are part of the key (a system prompt "X" and a user message "X" differ);
the key is 16 hex characters whatever the prompt's size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from hashlib import blake2b
from typing import Any, Final

# How much of the prompt decides the key: long enough to tell system prompts apart, short
# enough that a conversation keeps its key as it grows. Our choice (the brief's default).
DEFAULT_PREFIX_CHARS: Final = 256


def prompt_prefix_key(messages_or_prompt: Any, chars: int = DEFAULT_PREFIX_CHARS) -> str:
    """A stable key from the leading system message(s) and the first user message, or from
    the start of a completion prompt (a string, or the first of a list of strings)."""
    if isinstance(messages_or_prompt, str):
        text = messages_or_prompt[:chars]
    elif isinstance(messages_or_prompt, Sequence) and not isinstance(
        messages_or_prompt, bytes | bytearray
    ):
        text = _chat_prefix(messages_or_prompt, chars)
    else:
        text = ""
    return blake2b(text.encode(), digest_size=8).hexdigest()


def _chat_prefix(items: Sequence[Any], chars: int) -> str:
    parts: list[str] = []
    size = 0
    for item in items:
        if isinstance(item, str):  # a completions prompt given as a list of strings
            parts.append(item)
            size += len(item)
            break
        if not isinstance(item, Mapping):
            continue
        role = item.get("role")
        if role not in ("system", "developer", "user"):
            continue
        piece = f"{role}\x1f{_content_text(item.get('content'))}\x1e"
        parts.append(piece)
        size += len(piece)
        if role == "user" or size >= chars:
            break
    return "".join(parts)[:chars]


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        # Content parts (OpenAI vision/multi-part messages): only the text parts count.
        return "".join(
            part.get("text", "")
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""
