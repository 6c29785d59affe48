"""The gateway's upstream HTTP/1.1 client: keep-alive connection pools over httptools.

``pool = UpstreamPool("http://10.0.0.5:8000/v1")`` keeps connections to one origin;
``resp = await pool.request("POST", "/chat/completions", headers, body, ...)`` returns once the
response head is in, and the body is then read whole (``await resp.read()``) or relayed as it
arrives (``async for chunk in resp.iter_chunks()``), with reading paused while the consumer is
behind. ``await resp.aclose()`` (or ``async with``) hands the connection back.

Failures are the typed errors of :mod:`headway.core`, each with a ``reason``:

==========================================  ===================================================
``UpstreamError("connect_error")``          connect refused / unreachable (retryable)
``UpstreamTimeout("connect_timeout")``      no connection within ``connect_timeout``
``UpstreamTimeout("ttft_timeout")``         no response head within ``first_byte_timeout``, or
                                            no first body chunk within ``first_chunk_timeout``
``UpstreamTimeout("stall_timeout")``        a gap between body chunks over ``stall_timeout``
``DeadlineExceeded``                        the request's absolute deadline passed
``UpstreamError("connection_reset")``       the upstream closed mid-response; retryable only
                                            while no body byte reached the caller
``UpstreamError("bad_response")``           malformed or oversized response
``Overloaded("upstream_pool_full")``        ``max_pending`` callers already wait for a slot
``UpstreamError("pool_closed")``            the pool was closed
==========================================  ===================================================

An HTTP error status is *not* raised: the caller sees ``resp.status`` and decides.
"""

from ._client_origin import Origin, parse_origin
from ._client_pool import UpstreamPool
from ._client_response import UpstreamResponse

__all__ = ["Origin", "UpstreamPool", "UpstreamResponse", "parse_origin"]
