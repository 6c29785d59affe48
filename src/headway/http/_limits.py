"""Limits and timeouts that keep one HTTP connection's cost bounded, whatever the client does.

Every buffer the server holds for a client is capped here: the request target, the header
block, the body, and the number of pipelined requests waiting behind a running handler. Every
phase in which the server waits on the client has a deadline: reading headers (slowloris),
reading the body (between reads), idling on a keep-alive connection, and waiting for the client
to read a response (between writes). Values are plain data so the gateway config can carry them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits"]


@dataclass(frozen=True)
class Limits:
    # Apache httpd LimitRequestLine default: 8190 bytes for the request line.
    max_url_bytes: int = 8190
    # Node.js http.maxHeaderSize default: 16 KiB for the whole header block.
    max_header_bytes: int = 16 * 1024
    # Apache httpd LimitRequestFields default: 100 header fields.
    max_headers: int = 100
    # Judgement, not a standard: nginx's 1 MiB client_max_body_size is too small for LLM
    # requests (long contexts, base64 images); 16 MiB covers them and still bounds memory.
    max_body_bytes: int = 16 * 1024 * 1024
    # hyper / granian http1 header read timeout default: 30 s from the first byte to the
    # end of the headers (a fresh connection gets the same budget for its first request).
    header_timeout: float = 30.0
    # nginx client_body_timeout default: 60 s between two successive reads of the body.
    body_timeout: float = 60.0
    # nginx keepalive_timeout default: 75 s idle between requests on one connection.
    keepalive_timeout: float = 75.0
    # nginx send_timeout default: 60 s between two successive writes the client accepts.
    send_timeout: float = 60.0
    # asyncio's transport default high-water mark (64 KiB): above it a streaming write waits.
    write_high_water: int = 64 * 1024
    # Judgement: pipelined requests parsed ahead of the running handler before reading pauses.
    max_pipelined: int = 16
