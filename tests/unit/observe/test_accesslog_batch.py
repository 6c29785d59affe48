"""A batch of outcomes becomes the same lines one record at a time would, in one write."""

from __future__ import annotations

import io
import logging
from typing import Any

import orjson

from headway.observe import AccessLog
from headway.observe._accesslog import _Line
from headway.observe._window import BATCH as SKETCH_BATCH

WALL = 1_700_000_000.25


class CountingSink(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.writes += 1
        return super().write(data)


def _fields(i: int) -> dict[str, Any]:
    return dict(
        request_id=f"r{i}", tenant="acme", model="gpt-4o" if i % 2 else "prompt pasted here",
        status=200, latency=0.0012345 * i, endpoint="pool/ep0", route="chat",
        ttft=None if i % 2 else 0.25, prompt_tokens=12, completion_tokens=i, stream=bool(i % 2),
        reason="ok", attributes={"decisions": ["retried"]} if i == 2 else {},
        trace_id=None if i % 3 else f"trace{i}",
    )  # fmt: skip


def _outcome(i: int) -> _Line:
    """The same request as ``_fields(i)``, as an outcome the gateway's Recorder hands over."""
    f = _fields(i)
    return _Line(
        f["route"], f["model"], f["tenant"], f["status"], f["reason"], f["latency"],
        f["prompt_tokens"], f["completion_tokens"], f["endpoint"], f["ttft"], f["stream"],
        f["request_id"], f["attributes"], f["trace_id"],
    )  # fmt: skip


def test_a_batch_is_one_write_of_the_lines_records_make() -> None:
    one_by_one, together = CountingSink(), CountingSink()
    log = AccessLog(one_by_one, clock=lambda: WALL)
    for i in range(5):
        log.record(**_fields(i))
    assert one_by_one.writes == 5
    # The same five requests as the gateway's Recorder hands them over: one write.
    AccessLog(together, clock=lambda: WALL).write_outcomes([_outcome(i) for i in range(5)])
    assert together.writes == 1
    assert together.getvalue() == one_by_one.getvalue()
    lines = [orjson.loads(x) for x in together.getvalue().splitlines()]
    assert [x["request_id"] for x in lines] == ["r0", "r1", "r2", "r3", "r4"]
    assert [x.get("trace_id") for x in lines] == ["trace0", None, None, "trace3", None]


def test_a_logger_sink_gets_one_record_per_line() -> None:
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger = logging.getLogger("headway.test.access.batch")
    logger.setLevel(logging.INFO)
    handler = Collect()
    logger.addHandler(handler)
    try:
        AccessLog(logger, clock=lambda: WALL).write_outcomes([_outcome(i) for i in range(3)])
        assert [orjson.loads(x)["request_id"] for x in seen] == ["r0", "r1", "r2"]
    finally:
        logger.removeHandler(handler)


def test_sketch_folds_stay_small_enough_not_to_stall_a_request() -> None:
    # The add that fills a sketch's batch folds it inside its request's turn of the event loop:
    # 1024-value folds (~0.2 us each) made the p99 at concurrency 1 ~1.7 ms (bench/gateway.py).
    # Keep each stall in the tens of us.
    assert SKETCH_BATCH * 0.2e-6 <= 25e-6
