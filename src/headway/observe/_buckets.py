"""Histogram bucket bounds for LLM traffic, in seconds (and tokens per second).

One bucket is one time series per label set, so the bounds are few and placed where decisions
are made. Sources for the ranges: a cache hit or a gateway refusal takes about a millisecond;
time to first token is 50 ms .. a few seconds; a whole non-streamed completion is 0.5 .. 60 s
and clients commonly time out at 60 .. 120 s; inter-token latency is a few milliseconds
(AIPerf's example 3.4 ms, GenAI-Perf's 19.75 ms) to a few hundred on a loaded server.
"""

from __future__ import annotations

#: Request duration and TTFT: 1-2.5-5 steps from 1 ms to 1 s (cache hits, refusals, TTFT),
#: then roughly doubling to 120 s (generation time), our ceiling for a client's patience.
#: 17 bounds + ``+Inf``.
LLM_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    4.0,
    8.0,
    15.0,
    30.0,
    60.0,
    120.0,
)

#: Gap between streamed chunks: 1 ms .. 2.5 s, finest where decode speeds actually sit.
INTER_TOKEN_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.035,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
)

#: Output tokens per second of a completion: from a stalled stream to a fast small model.
TOKENS_PER_SECOND_BUCKETS: tuple[float, ...] = (
    1.0,
    5.0,
    10.0,
    20.0,
    35.0,
    50.0,
    75.0,
    100.0,
    150.0,
    250.0,
    500.0,
    1000.0,
)
