"""The tally: what it hands over is what was added, and the C tally gives exactly what the
Python reference gives (same slots, counts, buckets, sums bit for bit, runs, flushes)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from observe_records import Done

from headway.observe._tally import MAX_SLOTS, PyTally, Tally

try:
    from headway.observe._speedups import Tally as CTally
except ImportError:  # pragma: no cover - checked below
    CTally = None  # type: ignore[assignment,misc]

BOUNDS = (0.01, 0.1, 1.0, 10.0)
TPS = (5.0, 50.0)


GAPS = (0.01, 0.1)


def tallies() -> list[Tally]:
    made: list[Tally] = [PyTally(BOUNDS, TPS)]
    if CTally is not None:
        made.append(CTally(BOUNDS, TPS))
    return made


def slot_of(index: dict[tuple[object, ...], int]):  # type: ignore[no-untyped-def]
    def miss(*key: object) -> int:
        index[key] = len(index)
        return index[key]

    return miss


@pytest.mark.parametrize("tally", tallies(), ids=lambda t: type(t).__module__)
def test_a_batch_is_counted_into_its_slots_and_take_zeroes_them(tally: Tally) -> None:
    index: dict[tuple[object, ...], int] = {}
    run: list[float] = []
    tally.bind(0, run, "flush-0")
    batch = [
        Done("chat", "m", "t", 200, "ok", 0.05, prompt=10, completion=20, generation=0.5),
        Done("chat", "m", "t", 200, "ok", 2.0, prompt=5, completion=0, generation=1.0),
        Done("chat", "m", "t", 503, "shed", 0.001),
    ]
    assert tally.add_requests(batch, index, slot_of(index)) == ["flush-0"]
    assert run == [0.05, 2.0]  # slot 1 was never bound: its latencies go to no sketch
    assert index == {("chat", "m", "t", 200, "ok"): 0, ("chat", "m", "t", 503, "shed"): 1}
    taken = sorted(tally.take())
    no_stream = (False, 0.0, [0, 0, 0, 0, 0], 0.0, [0])
    assert taken == [
        (0, 2, 2.05, [0, 1, 0, 1, 0], True, 15, 20, 40.0, [0, 1, 0], *no_stream),
        (1, 1, 0.001, [1, 0, 0, 0, 0], False, 0, 0, 0.0, [0, 0, 0], *no_stream),
    ]
    assert tally.take() == []
    run.clear()
    assert tally.add_requests(batch[:1], index, slot_of(index)) == ["flush-0"]
    assert tally.add_requests(batch[:1], index, slot_of(index)) == []  # the run is non-empty


@pytest.mark.parametrize("tally", tallies(), ids=lambda t: type(t).__module__)
def test_attempts_are_keyed_by_endpoint_and_status(tally: Tally) -> None:
    index: dict[tuple[object, ...], int] = {}
    tally.add_attempts(
        [("p/e0", 200, 0.2), ("p/e0", 0, 5.0), ("p/e0", 200, 0.3)], index, slot_of(index)
    )
    assert sorted((r[0], r[1], r[3]) for r in tally.take()) == [
        (0, 2, [0, 0, 2, 0, 0]),
        (1, 1, [0, 0, 0, 1, 0]),
    ]
    with pytest.raises(TypeError):
        tally.add_attempts([("p/e0", 200)], index, slot_of(index))  # type: ignore[list-item]


@pytest.mark.parametrize("tally", tallies(), ids=lambda t: type(t).__module__)
def test_the_flush_is_named_when_an_append_fills_the_run(tally: Tally) -> None:
    tally = type(tally)(BOUNDS, TPS, flush_at=3)  # type: ignore[call-arg]
    index: dict[tuple[object, ...], int] = {}
    run: list[float] = []
    tally.bind(0, run, "full")
    one = [Done("chat", "m", "t", 200, "ok", 0.5)]
    assert [tally.add_requests(one * 2, index, slot_of(index)) for _ in range(3)] == [
        [],
        ["full"],  # the third value
        [],  # past the mark: the caller folds the run when it is named
    ]
    assert len(run) == 6
    with pytest.raises(ValueError):
        type(tally)(BOUNDS, TPS, flush_at=0)  # type: ignore[call-arg]


@pytest.mark.parametrize("tally", tallies(), ids=lambda t: type(t).__module__)
def test_a_streams_ttft_and_chunk_gaps_are_tallied(tally: Tally) -> None:
    tally = type(tally)(BOUNDS, TPS, gap_bounds=GAPS)  # type: ignore[call-arg]
    index: dict[tuple[object, ...], int] = {}
    streamed = Done("chat", "m", "t", 200, "ok", 3.0, ttft=0.5, stamps=[1.0, 1.005, 1.055, 1.555])
    tally.add_requests([streamed, Done("chat", "m", "t", 200, "ok", 0.2)], index, slot_of(index))
    ((*_, streamed_seen, ttft_sum, ttft, gap_sum, gaps),) = tally.take()
    assert streamed_seen is True
    assert (ttft_sum, ttft) == (0.5, [0, 0, 1, 0, 0])  # TTFT on the latency bounds
    assert gaps == [1, 1, 1]  # 5 ms, 50 ms, 500 ms
    assert gap_sum == pytest.approx(0.555)
    bad = Done("chat", "m", "t", 200, "ok", 1.0, stamps=[1.0, 2])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        tally.add_requests([bad], index, slot_of(index))


@pytest.mark.parametrize("tally", tallies(), ids=lambda t: type(t).__module__)
def test_token_totals_past_64_bits_stay_exact(tally: Tally) -> None:
    index: dict[tuple[object, ...], int] = {}
    big = 2**63 - 1
    batch = [Done("chat", "m", "t", 200, "ok", 1.0, prompt=big, completion=big, generation=1.0)] * 3
    tally.add_requests(batch, index, slot_of(index))
    (row,) = tally.take()
    assert row[5] == row[6] == 3 * big


@pytest.mark.parametrize("tally", tallies(), ids=lambda t: type(t).__module__)
def test_bad_values_and_slots_are_refused(tally: Tally) -> None:
    index: dict[tuple[object, ...], int] = {}
    with pytest.raises(TypeError):
        tally.add_requests(
            [Done("chat", "m", "t", 200, "ok", 1.0, completion=1.5)],  # type: ignore[arg-type]
            index,
            slot_of(index),
        )
    with pytest.raises(TypeError):
        tally.add_requests(
            [Done("chat", "m", "t", 200, "ok", "1")],
            index,  # type: ignore[arg-type]
            slot_of(index),
        )
    with pytest.raises(ValueError):
        tally.add_requests([Done("chat", "m", "t", 200, "ok", 1.0)], {}, lambda *k: MAX_SLOTS)
    with pytest.raises(ValueError):
        tally.add_requests([Done("chat", "m", "t", 200, "ok", 1.0)], {}, lambda *k: -1)
    with pytest.raises(RuntimeError):
        tally.add_requests([Done("chat", "m", "t", 200, "ok", 1.0)], {}, _raise)


def _raise(*key: object) -> int:
    raise RuntimeError("miss failed")


# -- the C tally against the reference ---------------------------------------------------------

if CTally is None and os.environ.get("CI"):  # CI builds the extension: a missing one fails
    raise AssertionError("CI builds headway.observe._speedups (setup.py)")

counts = st.one_of(st.none(), st.integers(min_value=-5, max_value=2**64 + 5), st.booleans())
times = st.one_of(
    st.floats(min_value=-1.0, max_value=1e6),
    st.just(float("nan")),
    st.integers(min_value=0, max_value=10**6),
)


def fresh(values: list[object]) -> st.SearchStrategy[object]:
    """One of ``values``, sometimes as a new object equal to it (a model name parsed from each
    request's body is a new str, a status past 256 a new int): the C tally's last-key shortcut
    must see equal keys as one key, whatever their identity."""

    def copy(v: object) -> object:
        if isinstance(v, str):
            return "".join(list(v)) if len(v) > 1 else v
        if isinstance(v, int):
            return int(str(v))
        return v

    return st.sampled_from(values) | st.sampled_from(values).map(copy)


outs = st.builds(
    Done,
    route=fresh(["chat", "embeddings"]),
    model=fresh([None, "m1", "m2"]),
    tenant=fresh([None, "t"]),
    status=fresh([200, 429, 503, 1000]),
    reason=fresh(["ok", "shed"]),
    latency=times,
    prompt=counts,
    completion=counts,
    generation=times,
    ttft=st.one_of(st.none(), times),
    stamps=st.one_of(st.none(), st.lists(st.floats(min_value=0.0, max_value=1e3), max_size=6)),
)
attempts = st.tuples(fresh(["p/a", "p/b"]), fresh([0, 200, 503, 1000]), times)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("requests"), st.lists(outs, max_size=8)),
        st.tuples(st.just("attempts"), st.lists(attempts, max_size=8)),
        st.tuples(st.just("take"), st.just([])),
        st.tuples(st.just("clear"), st.integers(min_value=0, max_value=3)),
    ),
    max_size=12,
)


def _as_outcome(out: Done) -> object:
    from headway.observe._speedups import Outcome

    made = Outcome(0.0, out.route)
    for name, value in vars(out).items():
        setattr(made, name, value)
    return made


def _replay(
    tally: Tally, script: list[tuple[str, object]], *, outcomes: bool = False
) -> list[object]:
    index: dict[tuple[object, ...], int] = {}
    runs = [[] for _ in range(4)]  # type: ignore[var-annotated]
    for at, run in enumerate(runs):
        tally.bind(at, run, at)  # slots 0-3 feed runs; later slots feed none
    seen: list[object] = []
    for kind, arg in script:
        if kind == "requests":
            batch = [_as_outcome(o) for o in arg] if outcomes else arg  # type: ignore[attr-defined]
            seen.append(tally.add_requests(batch, index, slot_of(index)))
        elif kind == "attempts":
            seen.append(tally.add_attempts(arg, index, slot_of(index)))  # type: ignore[arg-type]
        elif kind == "take":
            seen.append(sorted(tally.take(), key=lambda r: r[0]))
        else:
            runs[arg].clear()  # type: ignore[index]
    seen.append(sorted(tally.take(), key=lambda r: r[0]))
    seen.append(runs)
    seen.append(index)
    return seen


@pytest.mark.skipif(CTally is None, reason="headway.observe._speedups was not built")
@settings(max_examples=300, deadline=None)
@given(steps, st.integers(min_value=1, max_value=4))
def test_the_c_tally_gives_what_the_python_tally_gives(
    script: list[tuple[str, object]], flush_at: int
) -> None:
    assert CTally is not None
    py = _replay(PyTally(BOUNDS, TPS, flush_at=flush_at, gap_bounds=GAPS), script)
    c = _replay(CTally(BOUNDS, TPS, flush_at=flush_at, gap_bounds=GAPS), script)
    assert repr(c) == repr(py)  # repr: NaN sums compare equal, floats bit for bit
    # The gateway's C Outcome: the same numbers, its fields read straight from the struct.
    outcomes = _replay(
        CTally(BOUNDS, TPS, flush_at=flush_at, gap_bounds=GAPS), script, outcomes=True
    )
    assert repr(outcomes) == repr(py)


def test_metrics_read_the_same_through_either_tally(monkeypatch: pytest.MonkeyPatch) -> None:
    """GatewayMetrics on the Python tally (no C compiler at install) exports what it exports
    on the C one, and a scrape sees every request recorded before it."""
    from headway.observe import GatewayMetrics
    from headway.observe import _metrics as metrics_module

    def exported(factory: object) -> list[tuple[str, dict[str, str], float]]:
        monkeypatch.setattr(metrics_module, "new_tally", factory)
        m = GatewayMetrics(models=["m1"], tenants=["t"], endpoints=["p/a"])
        m.record_requests([Done("chat", "m1", "t", 200, "ok", 0.2, 3, 7, 0.1)] * 3)
        m.record_requests([Done("chat", "zz", "t", 503, "shed", 0.001)])
        m.record_attempts([("p/a", 200, 0.15), ("p/x", 0, 1.0)])
        first = m.render()
        m.record_requests([Done("chat", "m1", "t", 200, "ok", 0.4, 1, 1, 0.1)])
        assert m.render() != first  # recorded after a scrape: in the next one
        return [
            (s.name, s.labels, s.value)
            for family in m.registry.collect()
            for s in family.samples
            if not s.name.endswith("_created")
        ]

    py = exported(PyTally)
    assert (
        "headway_requests_total",
        {"route": "chat", "model": "m1", "tenant": "t", "status": "200", "reason": "ok"},
        4.0,
    ) in py
    assert ("headway_prompt_tokens_total", {"model": "m1", "tenant": "t"}, 10.0) in py
    assert ("headway_upstream_requests_total", {"endpoint": "other", "status": "0"}, 1.0) in py
    if CTally is not None:
        assert exported(CTally) == py


class _Sneaky(int):
    """An int whose arithmetic is Python code (which the C tally must not run mid-update)."""

    def __add__(self, other: object) -> int:
        raise RuntimeError("Python code ran")

    __radd__ = __add__


@pytest.mark.parametrize("tally", tallies(), ids=lambda t: type(t).__module__)
def test_token_counts_of_an_int_subclass_are_added_as_plain_ints(tally: Tally) -> None:
    index: dict[tuple[object, ...], int] = {}
    for value in (_Sneaky(7), _Sneaky(2**63 + 5)):  # in 64 bits, and past them
        out = Done("chat", "m", "t", 200, "ok", 1.0, value, value, 1.0)
        tally.add_requests([out, out], index, slot_of(index))
        (row,) = tally.take()
        prompt, completion = row[5], row[6]
        assert prompt == completion == 2 * int(value)
        assert type(prompt) is int
