"""SLO evaluation with a manual clock: burn rates, the workbook's alerts, windows, budget."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from headway.core import ManualClock
from headway.observe import (
    WORKBOOK_ALERTS,
    BurnAlert,
    SloBook,
    SloCollector,
    SloSpec,
    burn_rate,
    format_duration,
    parse_duration,
    slos_json,
)

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0
AVAILABILITY = SloSpec("chat", "availability", 99.9, model="m", route="chat")


@pytest.fixture
def clock() -> ManualClock:
    c = ManualClock()
    c.step(1020.0 - c.now())  # a minute boundary, so slots are whole minutes from here
    return c


def feed(book: SloBook, clock: ManualClock, minutes: int, total: int, bad: int) -> None:
    """``total`` requests a minute, ``bad`` of them 5xx, for ``minutes``; ends at the start of
    the next (empty) minute."""
    for _ in range(minutes):
        for i in range(total):
            book.record("chat", "m", 500 if i < bad else 200, 0.1)
        clock.step(MINUTE)


def alert(book: SloBook, long: float, short: float) -> tuple[bool, float, float]:
    [status] = book.statuses()
    for state in status.alerts:
        if (state.alert.long_window, state.alert.short_window) == (long, short):
            return state.firing, state.long.burn_rate, state.short.burn_rate
    raise AssertionError("no such alert")


def test_burn_rate_is_error_ratio_over_budget() -> None:
    assert burn_rate(1000, 10, 0.001) == pytest.approx(10.0)
    assert burn_rate(0, 0, 0.001) == 0.0


def test_steady_one_percent_burns_at_ten_and_does_not_page_on_1h_5m(clock: ManualClock) -> None:
    book = SloBook([AVAILABILITY], clock=clock)
    feed(book, clock, 60, 1000, 10)  # 1% errors against a 0.1% budget
    firing, long, short = alert(book, HOUR, 5 * MINUTE)
    assert long == pytest.approx(10.0)
    assert short == pytest.approx(10.0)
    assert not firing
    # ... but 10x is above the 6h/30m page's 6x and the tickets' 3x and 1x: the ratio over a
    # window counts the events in it, however few hours of traffic there were.
    assert alert(book, 6 * HOUR, 30 * MINUTE)[0]
    [status] = book.statuses()
    assert status.firing == ("page", "ticket")


@pytest.mark.parametrize(("bad", "fires"), [(17, False), (18, True), (25, True)])
def test_1h_5m_page_fires_from_14_4x(clock: ManualClock, bad: int, fires: bool) -> None:
    book = SloBook([AVAILABILITY], clock=clock)
    feed(book, clock, 60, 1250, bad)  # 18/1250 = 1.44% = exactly 14.4x a 0.1% budget
    firing, long, _short = alert(book, HOUR, 5 * MINUTE)
    assert long == pytest.approx(bad / 1250 / 0.001)
    assert firing is fires


def test_short_window_recovery_stops_the_page(clock: ManualClock) -> None:
    book = SloBook([AVAILABILITY], clock=clock)
    feed(book, clock, 60, 1000, 20)  # 20x
    assert alert(book, HOUR, 5 * MINUTE)[0]
    feed(book, clock, 5, 1000, 0)  # fixed: five clean minutes
    firing, long, short = alert(book, HOUR, 5 * MINUTE)
    assert short == 0.0
    assert long >= 14.4  # the hour still looks bad; the short window resets the alert
    assert not firing


def test_window_covers_current_slot_and_the_ones_before(clock: ManualClock) -> None:
    book = SloBook([AVAILABILITY], clock=clock)
    feed(book, clock, 60, 1000, 10)
    [status] = book.statuses()
    # At a minute boundary the current slot is empty: a 5 m window holds the last 4 minutes,
    # a 1 h window the last 59 (a window of w covers between w - 1 min and w).
    five = status.window(5 * MINUTE)
    assert (five.total, five.bad) == (4000, 40)
    hour = status.window(HOUR)
    assert (hour.total, hour.bad) == (59000, 590)
    clock.step(30.0)
    book.record("chat", "m", 500, 0.1)
    [status] = book.statuses()
    assert (status.window(5 * MINUTE).total, status.window(5 * MINUTE).bad) == (4001, 41)


def test_buckets_expire_and_slots_are_reused(clock: ManualClock) -> None:
    book = SloBook([AVAILABILITY], clock=clock)
    feed(book, clock, 10, 100, 50)
    clock.step(3 * DAY)  # the longest alert window (3 d) later: the same slots come round
    [status] = book.statuses()
    assert all(w.total == 0 and w.burn_rate == 0.0 for w in status.windows)
    assert not status.firing
    assert status.total == 1000  # the 30-day budget still remembers them
    feed(book, clock, 1, 100, 0)
    [status] = book.statuses()
    assert (status.window(3 * DAY).total, status.window(3 * DAY).bad) == (100, 0)


def test_error_budget_remaining_over_the_compliance_window(clock: ManualClock) -> None:
    spec = SloSpec("a", "availability", 99.0, model="m", route="chat")  # 1% budget
    book = SloBook([spec], clock=clock)
    assert book.statuses()[0].budget_remaining == 1.0  # nothing spent without traffic
    feed(book, clock, 10, 400, 1)  # 0.25% errors: a quarter of the budget
    assert book.statuses()[0].budget_remaining == pytest.approx(0.75)
    feed(book, clock, 10, 400, 7)  # now 80 of 8000 = 1%: all of it
    assert book.statuses()[0].budget_remaining == pytest.approx(0.0)
    feed(book, clock, 10, 400, 20)
    assert book.statuses()[0].budget_remaining < 0  # overspent
    clock.step(30 * DAY)
    assert book.statuses()[0].budget_remaining == 1.0  # the window moved past all of it


def test_availability_counts_5xx_as_bad_and_ignores_4xx(clock: ManualClock) -> None:
    book = SloBook([AVAILABILITY], clock=clock)
    for status in (200, 201, 304, 400, 401, 404, 413, 429, 499, 500, 502, 503, 504):
        book.record("chat", "m", status, 0.1)
    [s] = book.statuses()
    assert (s.total, s.bad) == (7, 4)


def test_latency_counts_successes_only_and_threshold_is_inclusive(clock: ManualClock) -> None:
    total = SloSpec("t", "latency", 99.0, threshold=1.0)
    ttft = SloSpec("f", "latency", 99.0, threshold=1.0, latency_of="ttft")
    book = SloBook([total, ttft], clock=clock)
    book.record("chat", "m", 200, 1.0, 0.2)  # exactly the threshold: good for both
    book.record("chat", "m", 200, 3.0, 0.5)  # slow total, fast first token
    book.record("chat", "m", 200, 3.0, 2.0)  # slow both
    book.record("embeddings", "m", 200, 2.0)  # not streamed: its TTFT is its total
    book.record("chat", "m", 503, 9.0)  # a failure is not a latency event
    book.record("chat", "m", 429, 9.0)
    t, f = book.statuses()
    assert (t.total, t.bad) == (4, 3)
    assert (f.total, f.bad) == (4, 2)


def test_route_and_model_select_the_slos(clock: ManualClock) -> None:
    specs = [
        SloSpec("chat-m", "availability", 99.0, model="m", route="chat"),
        SloSpec("m", "availability", 99.0, model="m"),
        SloSpec("chat", "availability", 99.0, route="chat"),
        SloSpec("all", "availability", 99.0),
    ]
    book = SloBook(specs, clock=clock)
    book.record("chat", "m", 200, 0.1)
    book.record("embeddings", "m", 200, 0.1)
    book.record("chat", "not-configured", 200, 0.1)
    book.record("completions", None, 200, 0.1)
    counts = {s.spec.name: s.total for s in book.statuses()}
    assert counts == {"chat-m": 1, "m": 2, "chat": 2, "all": 4}


def test_reload_keeps_history_of_unchanged_slos(clock: ManualClock) -> None:
    changed = SloSpec("lat", "latency", 99.0, threshold=1.0)
    old = SloBook([AVAILABILITY, changed], clock=clock)
    feed(old, clock, 2, 10, 1)
    old.record("chat", "m", 200, 5.0)  # a slow success: bad for "lat", good for "chat"
    new = SloBook(
        [AVAILABILITY, SloSpec("lat", "latency", 99.0, threshold=2.0)], clock=clock, previous=old
    )
    kept, fresh = new.statuses()
    assert kept.total == 21
    assert kept.bad == 2
    assert fresh.total == 0  # its threshold changed: it starts afresh
    old.record("chat", "m", 500, 0.1)  # a request finishing on the old runtime still counts
    assert new.statuses()[0].bad == 3


def test_custom_alert_windows(clock: ManualClock) -> None:
    spec = SloSpec(
        "a",
        "availability",
        99.0,
        alerts=(BurnAlert("page", 10 * MINUTE, 2 * MINUTE, 2.0),),
    )
    book = SloBook([spec], clock=clock)
    feed(book, clock, 10, 100, 3)  # 3% against 1%: 3x
    [status] = book.statuses()
    assert [w.seconds for w in status.windows] == [2 * MINUTE, 10 * MINUTE]
    assert status.firing == ("page",)


def test_spec_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="objective"):
        SloSpec("a", "availability", 100.0)
    with pytest.raises(ValueError, match="threshold"):
        SloSpec("a", "latency", 99.0)
    with pytest.raises(ValueError, match="short_window"):
        BurnAlert("page", 60.0, 60.0, 1.0)
    with pytest.raises(ValueError, match="unique"):
        SloBook([AVAILABILITY, AVAILABILITY])


def test_workbook_defaults() -> None:
    got = [(a.severity, a.long_window, a.short_window, a.burn_rate) for a in WORKBOOK_ALERTS]
    assert got == [
        ("page", HOUR, 5 * MINUTE, 14.4),
        ("page", 6 * HOUR, 30 * MINUTE, 6.0),
        ("ticket", DAY, 2 * HOUR, 3.0),
        ("ticket", 3 * DAY, 6 * HOUR, 1.0),
    ]
    assert AVAILABILITY.window == 30 * DAY


def test_collector_exposes_burn_budget_and_alerts(clock: ManualClock) -> None:
    book = SloBook([AVAILABILITY], clock=clock)
    feed(book, clock, 60, 1000, 20)
    registry = CollectorRegistry()
    live: list[SloBook | None] = [book]
    registry.register(SloCollector(lambda: live[0]))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    assert samples[("headway_slo_burn_rate", (("slo", "chat"), ("window", "5m")))] == (
        pytest.approx(20.0)
    )
    assert samples[("headway_slo_burn_rate", (("slo", "chat"), ("window", "3d")))] == (
        pytest.approx(20.0)
    )
    assert samples[("headway_slo_alert", (("severity", "page"), ("slo", "chat")))] == 1.0
    assert samples[("headway_slo_objective_ratio", (("slo", "chat"),))] == pytest.approx(0.999)
    remaining = samples[("headway_slo_error_budget_remaining", (("slo", "chat"),))]
    assert remaining == pytest.approx(1 - 20.0)  # 2% errors spend the 0.1% budget 20 times
    live[0] = None
    assert b"headway_slo" not in generate_latest(registry)


def test_json_for_the_admin_api(clock: ManualClock) -> None:
    assert slos_json(None) == {"slos": []}
    book = SloBook([AVAILABILITY], clock=clock)
    feed(book, clock, 10, 100, 10)
    [doc] = slos_json(book)["slos"]
    assert doc["name"] == "chat"
    assert doc["model"] == "m"
    assert doc["route"] == "chat"
    assert doc["events"] == {"total": 1000, "bad": 100}
    assert [w["window"] for w in doc["windows"]] == ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]
    assert doc["windows"][0]["burn_rate"] == pytest.approx(100.0)
    assert doc["firing"] == ["page", "ticket"]
    assert doc["alerts"][0]["windows"] == "1h/5m"
    assert doc["alerts"][0]["firing"] is True


def test_durations() -> None:
    assert parse_duration("5m") == 300.0
    assert parse_duration("1h30m") == 5400.0
    assert parse_duration(" 30d ") == 30 * DAY
    assert parse_duration(90) == 90.0
    for bad in ("5 minutes", "", "-1s", True, None, float("inf")):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert format_duration(300) == "5m"
    assert format_duration(5400) == "1h30m"
    assert format_duration(3 * DAY) == "3d"
    assert format_duration(0) == "0s"
