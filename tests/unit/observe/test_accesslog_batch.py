"""A batched access log writes the same lines as an unbatched one, only later and together."""

from __future__ import annotations

import io

import orjson

from headway.observe import AccessLog
from headway.observe._window import BATCH as SKETCH_BATCH

WALL = 1_700_000_000.25


def _record(log: AccessLog, i: int) -> None:
    log.line(
        f"r{i}", "acme", "gpt-4o" if i % 2 else "prompt pasted here", 200, 0.0012345 * i,
        "pool/ep0", "chat", None if i % 2 else 0.25, 12, i, bool(i % 2), "ok",
        {"decisions": ["retried"]} if i == 2 else {}, None if i % 3 else f"trace{i}",
    )  # fmt: skip


def test_batched_lines_equal_unbatched_and_wait_for_drain() -> None:
    plain, batched = io.BytesIO(), io.BytesIO()
    now = [WALL]
    direct = AccessLog(plain, clock=lambda: now[0])
    later = AccessLog(batched, clock=lambda: now[0], batch=3)
    for i in range(5):
        _record(direct, i)
        _record(later, i)
        now[0] += 0.5  # each line keeps the time it was recorded at, not the drain's
    # Three records filled the batch and went out together; two still wait.
    assert batched.getvalue() == b"".join(plain.getvalue().splitlines(keepends=True)[:3])
    later.drain()
    assert batched.getvalue() == plain.getvalue()
    lines = [orjson.loads(x) for x in batched.getvalue().splitlines()]
    assert [x["ts"] for x in lines[:2]] == [
        "2023-11-14T22:13:20.250000Z",
        "2023-11-14T22:13:20.750000Z",
    ]
    assert lines[0]["model"] == "invalid"  # bounded at format time, as unbatched
    assert lines[2]["decisions"] == ["retried"]
    later.drain()  # nothing left: writes nothing
    assert batched.getvalue() == plain.getvalue()


def test_a_logger_sink_is_never_batched() -> None:
    import logging

    logger = logging.getLogger("headway.test.batch")
    logger.setLevel(logging.INFO)
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Keep()
    logger.addHandler(handler)
    try:
        log = AccessLog(logger, clock=lambda: WALL, batch=100)
        _record(log, 1)
        assert len(seen) == 1  # at once, one line per call
    finally:
        logger.removeHandler(handler)


def test_sketch_folds_stay_small_enough_not_to_stall_a_request() -> None:
    # The add that fills a sketch's batch folds it inside its request's turn of the event loop:
    # 1024-value folds (~0.2 us each) made the p99 at concurrency 1 ~1.7 ms (bench/gateway.py).
    # Keep each stall in the tens of us.
    assert SKETCH_BATCH * 0.2e-6 <= 25e-6
