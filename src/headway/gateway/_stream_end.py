"""What a streamed answer gives back when it ends: the attempt's outcome, the token quota
(settled from the stream's ``usage``), the watch's record, the response, the admission slot.

Why a module of its own: the relay (``_relay``) is an async generator, which mypyc does not
compile; its end, run once per stream, is compiled here (``headway._native``) and called
with one await instead of a dozen lines of interpreted bookkeeping.
"""

from __future__ import annotations

from ._openai import extract_usage
from ._recorder import StreamWatch
from ._runtime import Runtime
from ._tenants import Admission
from ._upstreams import StreamReply


async def stream_ended(
    runtime: Runtime,
    reply: StreamReply,
    admission: Admission,
    watch: StreamWatch | None,
    tail: bytes,
    events: int,
    prompt_tokens: int,
    error: BaseException | None,
    cancelled: bool,
) -> None:
    """The stream is over (``error``: how it failed; ``cancelled``: the client went away).
    ``tail`` is its last two chunks, where a ``usage`` event is; without one, the estimated
    prompt plus one token per event relayed (``events``) is charged."""
    reply.finish(error, cancelled=cancelled)
    usage = extract_usage(tail)
    total = usage.total_tokens if usage is not None else prompt_tokens + events
    if watch is not None:
        watch.ended(usage, error, cancelled)
    await admission.settle(total)
    await reply.response.aclose()
    await runtime.admission.__aexit__(None, None, None)
    runtime.leave()
