"""The gateway's Recorder: outcomes are stamped when a request ends and recorded in batches
(observe.record_delay after a batch's first; these tests mostly use 0, the end of the turn)."""

from __future__ import annotations

import asyncio
import io
import math

import orjson
import pytest

from headway.core import ManualClock
from headway.gateway._observation import (
    Observation,
    PyObservation,
    py_record_outcome,
)
from headway.gateway._recorder import MAX_BATCH, Recorder, Seen
from headway.observe import AccessLog, GatewayMetrics

_FIELDS = [f for f in PyObservation.__slots__ if f not in ("trace_id",)]


def _setup(
    clock: ManualClock, delay: float = 0.0
) -> tuple[Recorder, GatewayMetrics, io.BytesIO, list[float]]:
    metrics = GatewayMetrics(models=["m"], tenants=["t"], clock=clock)
    sink = io.BytesIO()
    walls = [1_700_000_000.0]

    def wall() -> float:  # each call a second later: lines written together share one stamp
        walls[0] += 1.0
        return walls[0]

    log = AccessLog(sink, clock=wall, models=["m"])
    recorder = Recorder(
        clock=clock, metrics=metrics, access_log=log, slos=None, tracing=False, delay=delay
    )
    return recorder, metrics, sink, walls


def _seen(start: float, *, stream: bool = False, rid: str | None = "r") -> Seen:
    seen = Seen(start, "chat", None)
    seen.tenant, seen.model, seen.request_id, seen.stream = "t", "m", rid, stream
    seen.prompt, seen.completion = 4, 8
    return seen


async def test_outcomes_are_stamped_when_recorded_and_written_after_the_turn(
    clock: ManualClock,
) -> None:
    recorder, metrics, sink, _ = _setup(clock)
    start = clock.now()
    whole, stream = _seen(start), _seen(start, stream=True, rid=None)
    clock.step(0.25)
    recorder.record(whole, 200, "ok")
    clock.step(0.5)  # later bookkeeping does not move the stamp
    recorder.record(stream, 502, "upstream_error", start + 0.125, [start + 0.125, start + 0.375])
    made = recorder._pending
    assert [(o.latency, o.generation, o.ttft, o.stream) for o in made] == [
        (0.25, 0.25, None, False),
        (0.75, pytest.approx(0.25), pytest.approx(0.125), True),
    ]
    assert made[1].stamps == [start + 0.125, start + 0.375]
    assert sink.getvalue() == b""  # nothing yet: the answers of this turn come first
    await asyncio.sleep(0)
    lines = [orjson.loads(x) for x in sink.getvalue().splitlines()]
    assert [(x["status"], x["latency_ms"], x["ttft_ms"]) for x in lines] == [
        (200, 250.0, None),
        (502, 750.0, 125.0),
    ]
    assert len({x["ts"] for x in lines}) == 1  # one batch, one write call
    assert lines[0]["request_id"] == "r"
    assert int(lines[1]["request_id"], 16) > 0  # made up for a request that had none
    assert metrics.latency_quantiles("m", (0.5,))[0] > 0


async def test_drain_records_at_once_and_the_scheduled_turn_finds_nothing(
    clock: ManualClock,
) -> None:
    recorder, _, sink, _ = _setup(clock)
    recorder.record(_seen(clock.now()), 200, "ok")
    recorder.drain()  # e.g. an admin read: it sees every finished request
    assert len(sink.getvalue().splitlines()) == 1
    await asyncio.sleep(0)
    assert len(sink.getvalue().splitlines()) == 1  # not twice
    recorder.record(_seen(clock.now()), 200, "ok")  # a new turn schedules a new drain
    await asyncio.sleep(0)
    assert len(sink.getvalue().splitlines()) == 2


async def test_a_batch_waits_the_delay_and_takes_what_ends_meanwhile(clock: ManualClock) -> None:
    """Real loop time (the delay is a loop timer), with generous bounds."""
    recorder, _, sink, _ = _setup(clock, delay=0.1)
    recorder.record(_seen(clock.now()), 200, "ok")
    await asyncio.sleep(0.01)
    assert sink.getvalue() == b""  # waiting for others
    recorder.record(_seen(clock.now()), 200, "ok")  # joins the batch: no second timer
    await asyncio.sleep(0.5)
    lines = [orjson.loads(x) for x in sink.getvalue().splitlines()]
    assert len(lines) == 2
    assert len({x["ts"] for x in lines}) == 1  # one batch, one write call


async def test_a_read_drains_before_the_delay_and_the_timer_then_finds_nothing(
    clock: ManualClock,
) -> None:
    recorder, _, sink, _ = _setup(clock, delay=0.05)
    recorder.record(_seen(clock.now()), 200, "ok")
    recorder.drain()  # an admin read
    assert len(sink.getvalue().splitlines()) == 1
    recorder.record(_seen(clock.now()), 200, "ok")  # rides on the timer already set
    await asyncio.sleep(0.5)
    assert len(sink.getvalue().splitlines()) == 2
    recorder.record(_seen(clock.now()), 200, "ok")  # the timer fired: a new one is set
    await asyncio.sleep(0.5)
    assert len(sink.getvalue().splitlines()) == 3


async def test_a_full_batch_drains_at_the_end_of_the_turn_whatever_the_delay(
    clock: ManualClock,
) -> None:
    recorder, _, sink, _ = _setup(clock, delay=3600.0)
    for _ in range(MAX_BATCH - 1):
        recorder.record(_seen(clock.now()), 200, "ok")
    await asyncio.sleep(0)
    assert sink.getvalue() == b""
    for _ in range(3):  # reaches the bound, then one more in the same turn
        recorder.record(_seen(clock.now()), 200, "ok")
    assert sink.getvalue() == b""  # not inside the request that filled it
    await asyncio.sleep(0)
    assert len(sink.getvalue().splitlines()) == MAX_BATCH + 2
    assert recorder._pending == []


async def test_upstream_attempts_are_counted_with_the_turn(clock: ManualClock) -> None:
    recorder, metrics, _, _ = _setup(clock)
    attempt = recorder.attempt  # what the pools hold: one list's append, across drains
    attempt(("p/ep0", 200, 0.01))
    attempt(("p/ep0", 503, 0.02))
    recorder.record(_seen(clock.now()), 200, "ok")  # their request's finish schedules the drain
    assert math.isnan(metrics.endpoint_latency_quantiles("p/ep0", (0.5,))[0])  # nothing yet
    await asyncio.sleep(0)
    assert metrics.endpoint_latency_quantiles("p/ep0", (1.0,))[0] > 0.019
    attempt(("p/ep0", 200, 0.5))
    recorder.drain()  # an admin read
    assert metrics.endpoint_latency_quantiles("p/ep0", (1.0,))[0] > 0.49
    assert 'headway_upstream_requests_total{endpoint="other",status="200"} 2.0' in (
        metrics.render().decode()
    )


def test_without_a_running_loop_an_outcome_is_recorded_at_once(clock: ManualClock) -> None:
    recorder, _, sink, _ = _setup(clock)
    recorder.record(_seen(clock.now()), 200, "ok")  # e.g. a stream closed after its loop ended
    assert len(sink.getvalue().splitlines()) == 1


async def test_a_failing_sink_does_not_cost_the_others(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A token count of the wrong type makes the metrics' tally raise; the access log (whose
    Python formatter takes any value) still writes the line, and the failure is logged."""
    recorder, _, sink, _ = _setup(clock)
    odd = PyObservation(clock.now(), "chat")  # what no compiled Seen would take
    odd.tenant, odd.model, odd.request_id, odd.status, odd.reason = "t", "m", "r", 200, "ok"
    odd.prompt, odd.completion, odd.latency, odd.generation = 3.5, 8, 0.25, 0.25  # type: ignore[assignment]
    recorder._pending.append(odd)
    recorder.drain()
    assert [orjson.loads(x)["prompt_tokens"] for x in sink.getvalue().splitlines()] == [3.5]
    assert "recording a batch in the metrics failed" in caplog.text


@pytest.mark.parametrize("stream", [False, True])
def test_record_outcome_and_its_twin_make_the_same_outcome(stream: bool) -> None:
    speedups = pytest.importorskip("headway.observe._speedups")
    made: list[list[Observation]] = [[], []]
    args = ("chat", "t", "m", "pool/ep0", "r", {"retried": ["x"]}, 4, 8, None, 200, "ok", stream)
    tail = (1.5, [1.5, 2.0, 2.75]) if stream else (None, None)
    for record, pending in zip((speedups.record_outcome, py_record_outcome), made, strict=True):
        record(pending, 1.0, 3.0, *args, *tail)
    [c], [py] = made
    for field in _FIELDS:
        assert getattr(c, field) == getattr(py, field), field
    assert (c.ttft, c.generation) == ((0.5, 1.25) if stream else (None, 2.0))


async def test_a_record_without_a_request_id_gets_one(clock: ManualClock) -> None:
    recorder, _, _, _ = _setup(clock)
    recorder.record(Seen(clock.now(), "chat", None), 401, "invalid_api_key")
    assert int(recorder._pending[0].request_id, 16) > 0


@pytest.mark.parametrize("twin", ["python", "c"])
def test_record_outcome_and_its_twin_append_and_say_when_the_batch_was_empty(twin: str) -> None:
    if twin == "c":
        speedups = pytest.importorskip("headway.observe._speedups")
        record = speedups.record_outcome
    else:
        record = py_record_outcome
    pending: list[Observation] = []
    args = ("chat", "t", None, None, "r", None, None, None, None, 404, "model_not_found")
    args += (False, None, None)  # a whole answer
    assert record(pending, 1.0, 1.5, *args) is True
    assert record(pending, 2.0, 2.25, *args) is False
    assert [(o.latency, o.generation, o.stream, o.ttft) for o in pending] == [
        (0.5, 0.5, False, None),
        (0.25, 0.25, False, None),
    ]
    with pytest.raises(TypeError):
        record(pending, "not a time", 2.0, *args)
    with pytest.raises(TypeError):  # a stream's stamps, when kept, hold its first chunk's
        record(pending, 1.0, 2.0, *args[:-3], True, 1.5, [])
    assert len(pending) == 2


async def test_a_request_with_no_decisions_keeps_no_attributes_dict_waiting(
    clock: ManualClock,
) -> None:
    """An empty attributes dict is recorded as None: the outcome then holds only strings and
    numbers while it waits for its batch, and the dict, a GC object, is freed with its request
    (held, the hundreds waiting counted toward the next young collection)."""
    recorder, _, sink, _ = _setup(clock)
    for attributes in ({}, {"retried": ["p/e"]}):
        seen = Seen(clock.now(), "chat", None)
        seen.tenant, seen.model, seen.attributes = "t", "m", attributes
        recorder.record(seen, 200, "ok")
    assert [o.attributes for o in recorder._pending] == [None, {"retried": ["p/e"]}]
    recorder.drain()
    lines = [orjson.loads(x) for x in sink.getvalue().splitlines()]
    assert [x["decisions"] for x in lines] == [[], ["retried"]]
