"""The SSE relay: a streamed answer's chunks go to the client as they arrive, unchanged.

Kept in a module of its own because it is an async generator, which mypyc does not compile
(``headway._native``): the rest of the request path is compiled, this runs as Python.

Guarantees: the first chunk (already read by the attempt) goes out first; a failure after it
ends the stream with an SSE ``error`` event (the 200 is already sent); however the stream ends
(done, failed, client gone), the attempt's outcome is recorded once, the token quota is settled
from the stream's ``usage`` (else the estimated prompt plus one token per event relayed), and
the admission slot is released.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson

from headway.core import Clock
from headway.observe import GatewayMetrics

from ._errors import http_error, reason_label
from ._openai import extract_usage
from ._recorder import Seen
from ._runtime import Runtime
from ._tenants import Admission
from ._upstreams import StreamReply

#: Chunk arrival times a stream holds before it hands their gaps to the metrics (our choice:
#: 256 floats, ~8 KiB; a ten-minute stream at 50 tokens/s would otherwise hold ~1 MB).
STREAM_STAMPS_HELD = 256
# nginx's status for a request whose client went away before the answer was complete.
CLIENT_CLOSED = 499


async def relay(
    runtime: Runtime,
    reply: StreamReply,
    admission: Admission,
    prompt_tokens: int,
    seen: Seen | None,
    clock: Clock,
) -> AsyncIterator[bytes]:
    """Relay SSE chunks as they arrive, unchanged; account usage at the end."""
    response = reply.response
    previous = b""
    last = reply.first
    events = last.count(b"data:")
    error: BaseException | None = None
    cancelled = False
    # Chunk arrival times, while metrics are on: the recorder's batch turns them into TTFT
    # and chunk gaps. The response stamps each chunk as it hands it over (compiled: a clock
    # read and a list append), and hands a long stream's gaps to the metrics as it goes, so
    # memory stays flat.
    stamps: list[float] | None = None
    first = 0.0
    metrics = runtime.metrics
    if seen is not None:
        first = clock.now()
        if metrics is not None:
            stamps = [first]
            observed = seen

            def hand_over(held: list[float]) -> None:
                _hand_over_gaps(metrics, observed, held)

            response.stamp_chunks(stamps, clock, STREAM_STAMPS_HELD, hand_over)
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
        reply.finish(error, cancelled=cancelled)
        usage = extract_usage(previous + last)
        if usage is not None:
            total: int | None = usage.total_tokens
        else:
            # No usage chunk (the client did not ask for one): the estimated prompt plus one
            # token per event relayed.
            total = prompt_tokens + events
        if seen is not None:
            _record_stream(runtime, seen, first, stamps, usage, error, cancelled)
        await admission.settle(total)
        await response.aclose()
        await runtime.admission.__aexit__(None, None, None)
        runtime.leave()


def _hand_over_gaps(metrics: GatewayMetrics, seen: Seen, stamps: list[float]) -> None:
    """A long stream's chunk gaps so far into the metrics now; the last stamp stays, to
    start the next gap."""
    metrics.stream_gaps(seen.model, stamps)
    del stamps[:-1]


def _record_stream(
    runtime: Runtime,
    seen: Seen,
    first: float,
    stamps: list[float] | None,
    usage: Any,
    error: BaseException | None,
    cancelled: bool,
) -> None:
    if usage is not None:
        seen.prompt = usage.prompt_tokens
        seen.completion = usage.completion_tokens
    recorder = runtime.recorder
    assert recorder is not None  # a stream is seen only by an observed runtime
    if cancelled:
        recorder.record(seen, CLIENT_CLOSED, "client_closed", first, stamps)
    elif error is not None:
        # The 200 is already sent; the outcome counted is what the error maps to.
        err = http_error(error)
        recorder.record(seen, err.status, reason_label(err.reason), first, stamps)
    else:
        recorder.record(seen, 200, "ok", first, stamps)
