"""What a handler returns, and how a response head is encoded.

``Response`` is a complete body sent with ``content-length``. ``StreamingResponse`` is an async
iterable of byte chunks, sent with chunked transfer coding as each chunk arrives (SSE relays
chunks untouched). A handler raises ``AbortConnection`` to drop the connection without an
answer (used by the simulator to inject resets). ``error_response`` builds the OpenAI error
envelope ``{"error": {"message", "type", "code", "param"}}`` that every error answer uses.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Sequence
from http import HTTPStatus
from typing import Final

import orjson

__all__ = [
    "AbortConnection",
    "Header",
    "Response",
    "StreamingResponse",
    "error_response",
    "status_line",
]

Header = tuple[bytes, bytes]
JSON: Final = b"application/json"
SSE: Final = b"text/event-stream"


class AbortConnection(Exception):
    """Raised by a handler (or a stream) to close the connection abruptly, answering nothing."""


class Response:
    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        *,
        headers: Sequence[Header] = (),
        content_type: bytes = JSON,
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers
        self.content_type = content_type


class StreamingResponse:
    def __init__(
        self,
        chunks: AsyncIterable[bytes],
        *,
        status: int = 200,
        headers: Sequence[Header] = (),
        content_type: bytes = SSE,
    ) -> None:
        self.status = status
        self.chunks = chunks
        self.headers = headers
        self.content_type = content_type


def _status_lines() -> dict[int, bytes]:
    return {int(s): b"HTTP/1.1 %d %s\r\n" % (s, s.phrase.encode()) for s in HTTPStatus}


_STATUS_LINES: Final = _status_lines()


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d Unknown\r\n" % status
    return line


_ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "invalid_request_error",
    414: "invalid_request_error",
    429: "rate_limit_error",
    431: "invalid_request_error",
}


def error_response(
    status: int,
    message: str,
    *,
    type: str | None = None,
    code: str | None = None,
    param: str | None = None,
    headers: Sequence[Header] = (),
) -> Response:
    """An error in OpenAI's envelope; ``type`` defaults from the status."""
    if type is None:
        type = _ERROR_TYPES.get(
            status, "server_error" if status >= 500 else "invalid_request_error"
        )
    body = orjson.dumps({"error": {"message": message, "type": type, "code": code, "param": param}})
    return Response(status, body, headers=headers)
