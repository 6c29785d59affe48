"""The SSE relay: a streamed answer's chunks go to the client as they arrive, unchanged.

Kept in a module of its own because it is an async generator, which mypyc does not compile
(``headway._native``): the rest of the request path is compiled, this runs as Python.

Guarantees: the first chunk (already read by the attempt) goes out first; a failure after it
ends the stream with an SSE ``error`` event (the 200 is already sent); however the stream ends
(done, failed, client gone), the attempt's outcome is recorded once, the token quota is settled
from the stream's ``usage`` (else the estimated prompt plus one token per event relayed), and
the admission slot is released (all of that in ``_stream_end``, compiled).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson

from ._errors import http_error
from ._recorder import StreamWatch
from ._runtime import Runtime
from ._stream_end import stream_ended
from ._tenants import Admission
from ._upstreams import StreamReply


async def relay(
    runtime: Runtime,
    reply: StreamReply,
    admission: Admission,
    prompt_tokens: int,
    watch: StreamWatch | None,
) -> AsyncIterator[bytes]:
    """Relay SSE chunks as they arrive, unchanged; account usage at the end. ``watch``: an
    observed stream's first-chunk and chunk times (made by compiled code, see StreamWatch),
    told how the stream ended."""
    response = reply.response
    previous = b""
    last = reply.first
    events = last.count(b"data:")
    error: BaseException | None = None
    cancelled = False
    try:
        yield last
        async for chunk in response:
            previous, last = last, chunk
            events += chunk.count(b"data:")
            yield chunk
    except asyncio.CancelledError:  # the client went away
        cancelled = True
        raise
    except GeneratorExit:
        cancelled = True
        raise
    except Exception as exc:
        error = exc
        _, type_, code, message, *_ = http_error(exc)
        event = {"error": {"message": message, "type": type_, "code": code}}
        yield b"data: " + orjson.dumps(event) + b"\n\n"
    finally:
        await stream_ended(
            runtime, reply, admission, watch, previous + last, events, prompt_tokens, error,
            cancelled,
        )  # fmt: skip
