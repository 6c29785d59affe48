"""The C hot loops (access-log lines, sketch bins) give exactly what the Python paths give."""

from __future__ import annotations

import datetime as dt
import io
import math
import os
from array import array
from collections.abc import Mapping
from dataclasses import dataclass

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headway.observe import OTHER, AccessLog, decision_reasons
from headway.observe import _accesslog as accesslog
from headway.observe import _sketch as sketch

C_FORMAT = accesslog._format_lines
if C_FORMAT is None and not os.environ.get("CI"):
    pytest.skip(
        "headway.observe._speedups was not built (no C compiler at install): "
        "the pure-Python path formats every line",
        allow_module_level=True,
    )
# In CI the extension must have been built: a missing one fails here, never skips.
assert C_FORMAT is not None, "CI builds headway.observe._speedups (setup.py)"

MODELS = frozenset({"gpt-4o", "llama", "qwen/Qwen2.5:7b@main"})
TS = dt.datetime(2026, 11, 25, 16, 18, 13, 139403, tzinfo=dt.UTC)


@dataclass
class Rec:
    request_id: str | None
    tenant: str | None
    route: str | None
    model: str | None
    endpoint: str | None
    status: int
    reason: str | None
    latency: float
    ttft: float | None
    prompt: int | None
    completion: int | None
    stream: bool
    attributes: Mapping[str, object] | None
    trace_id: str | None


names = st.one_of(st.none(), st.text(max_size=20), st.sampled_from(sorted(MODELS)))
tokens = st.one_of(st.none(), st.integers(min_value=0, max_value=2**53))
seconds = st.floats(min_value=0.0, max_value=1e7, allow_nan=False)
attributes = st.one_of(
    st.none(),
    st.just({}),
    st.fixed_dictionaries({"decisions": st.lists(st.sampled_from(["retried", "shed", 'x"y']))}),
    st.just({"fallback": ["upstream_error"], "cached": True}),
)
records = st.builds(
    Rec, names, names, names, names, names, st.integers(100, 599), names, seconds,
    st.one_of(st.none(), seconds), tokens, tokens, st.booleans(), attributes,
    st.one_of(st.none(), st.text(max_size=40)),
)  # fmt: skip


def c_lines(recs: list[Rec]) -> bytes:
    assert C_FORMAT is not None
    ts = orjson.dumps(TS, option=orjson.OPT_UTC_Z)
    return C_FORMAT(ts, recs, MODELS, OTHER, decision_reasons)


@settings(max_examples=300, deadline=None)
@given(st.lists(records, min_size=1, max_size=5))
def test_c_lines_equal_the_python_lines(recs: list[Rec]) -> None:
    assert c_lines(recs) == accesslog._lines(TS, recs, MODELS)


def test_escapes_and_numbers_match_orjson() -> None:
    rec = Rec(
        "r\"1\\", "t\x00\x1f\b\t\n\f\r", "chat", "pasted prompt", "é✓😀/\u2028", 200, None,
        0.0012345, 0.25, 0, 2**40, True, {"decisions": ["retried", "retried", "shed"]}, "t" * 32,
    )  # fmt: skip
    line = c_lines([rec])
    assert line == accesslog._lines(TS, [rec], MODELS)
    parsed = orjson.loads(line)
    assert parsed["tenant"] == "t\x00\x1f\b\t\n\f\r"
    assert parsed["model"] == OTHER
    assert parsed["latency_ms"] == 1.234  # round-half-even of 1234.5 us
    assert parsed["decisions"] == ["retried", "shed"]


@pytest.mark.parametrize("special", ['"', "\\", "\x00", "\x1f", "\n", "\x7f", "é", "😀"])
def test_strings_checked_a_word_at_a_time_escape_every_position(special: str) -> None:
    # The C writer tests eight bytes at once for something to escape: a character to escape
    # in any position of a word, or of the tail after the last whole word, is still escaped.
    recs = [
        Rec(
            "a" * at + special + "b" * (23 - at), "t", "chat", "gpt-4o", "x" * 17 + special,
            200, None, 0.5, None, None, None, False, None, None,
        )
        for at in range(24)
    ]  # fmt: skip
    assert c_lines(recs) == accesslog._lines(TS, recs, MODELS)
    assert [orjson.loads(x)["request_id"] for x in c_lines(recs).splitlines()] == [
        r.request_id for r in recs
    ]


@pytest.mark.parametrize(
    "value",
    [0, 1, 9, 10, 99, 100, 101, 999, 1000, 2**30 - 1, 2**30, 2**31, 2**63 - 1, -1, -100, -(2**63)],
)
def test_ints_of_every_width_print_as_python_prints_them(value: int) -> None:
    rec = Rec(
        "r", "t", "chat", "gpt-4o", None, 200, None, 0.5, None, value, value, False, None, None
    )
    line = orjson.loads(c_lines([rec]))
    assert line["prompt_tokens"] == line["completion_tokens"] == value
    assert c_lines([rec]) == accesslog._lines(TS, [rec], MODELS)


@pytest.mark.parametrize(
    "seconds",
    [0.0, 0.0000005, 0.0000015, 0.0012345, 0.001, 0.01, 0.0105, 0.12, 1.0, 59.9999995, 1e9],
)
def test_milliseconds_round_half_even_and_print_as_python_prints_them(seconds: float) -> None:
    rec = Rec(
        "r", "t", "chat", "gpt-4o", None, 200, None, seconds, seconds, None, None, False, None, None
    )
    line = orjson.loads(c_lines([rec]))
    assert line["latency_ms"] == round(seconds * 1e6) / 1000
    assert c_lines([rec]) == accesslog._lines(TS, [rec], MODELS)


def test_an_odd_value_falls_back_to_the_python_path() -> None:
    out = io.BytesIO()
    log = AccessLog(out, clock=lambda: 1_700_000_000.0, models=MODELS)
    rec = Rec("r", "t", "chat", "gpt-4o", None, 200, "ok", 0.5, None, None, None, False, {}, None)
    odd = Rec("r2", "t", "chat", "gpt-4o", None, 200, "ok", 0.5, None, 3.0, None, False, {}, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        c_lines([rec, odd])  # a float token count is not the C path's business
    log.write_outcomes([rec, odd])
    lines = [orjson.loads(x) for x in out.getvalue().splitlines()]
    assert [x["prompt_tokens"] for x in lines] == [None, 3.0]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(min_value=-1.0, max_value=1e9, allow_nan=False),
            st.floats(min_value=1e-12, max_value=1e-6),
            st.integers(min_value=0, max_value=10**6),
        ),
        max_size=80,
    )
)
def test_c_sketch_counts_equal_the_python_counts(values: list[float]) -> None:
    """The same buckets, the same zeros, and the same answer when the array must grow first
    (then nothing is counted): at any offset, collapsed or not."""
    assert sketch._add_to_counts is not None
    inv, floor = 1.0 / math.log(1.02), 1e-9
    for offset, size, collapsed in ((-2000, 3000, False), (0, 40, False), (0, 40, True)):
        c_counts = array("q", [1] * size)
        py_counts = array("q", [1] * size)
        c = sketch._add_to_counts(c_counts, offset, collapsed, values, inv, floor)
        py = sketch._python_add_to_counts(py_counts, offset, collapsed, values, inv, floor)
        assert c == py
        assert c_counts == py_counts


def test_c_sketch_counts_refuse_what_is_not_an_int64_array() -> None:
    assert sketch._add_to_counts is not None
    with pytest.raises(TypeError):
        sketch._add_to_counts(array("d", [0.0]), 0, False, [1.0], 50.0, 1e-9)
    with pytest.raises(ValueError, match="out of range"):
        sketch._add_to_counts(array("q", [0]), 0, False, [math.inf], 50.0, 1e-9)
    with pytest.raises(ValueError, match="out of range"):
        sketch._python_add_to_counts(array("q", [0]), 0, False, [math.inf], 50.0, 1e-9)


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.floats(min_value=0.0, max_value=253402300799.0),
        st.integers(min_value=0, max_value=4_000_000_000).map(lambda s: s + 0.5e-6),
        st.integers(min_value=0, max_value=4_000_000_000).map(lambda s: s + 0.9999995),
        st.integers(min_value=0, max_value=10**12).map(lambda us: us / 1e6),
    )
)
def test_c_time_stamps_equal_orjsons_datetimes(seconds: float) -> None:
    assert accesslog._iso_utc is not None
    expected = orjson.dumps(dt.datetime.fromtimestamp(seconds, dt.UTC), option=orjson.OPT_UTC_Z)
    assert accesslog._iso_utc(seconds) == expected


def test_c_time_stamps_refuse_what_they_cannot_write() -> None:
    assert accesslog._iso_utc is not None
    for bad in (-1.0, 253402300800.0, math.nan, math.inf):
        with pytest.raises(ValueError):
            accesslog._iso_utc(bad)
    with pytest.raises(TypeError):
        accesslog._iso_utc("1")  # type: ignore[arg-type]


def test_a_batch_changed_while_formatting_does_not_crash() -> None:
    assert C_FORMAT is not None
    attrs = {"decisions": ["retried"]}
    recs = [
        Rec(f"r{i}", "t", "chat", "gpt-4o", None, 200, "ok", 0.5, None, 1, 2, False, attrs, None)
        for i in range(3)
    ]

    def shrinking(attributes: object) -> list[str]:
        recs.clear()  # Python code run from inside the C loop changes the batch
        return ["retried"]

    ts = orjson.dumps(TS, option=orjson.OPT_UTC_Z)
    lines = C_FORMAT(ts, recs, MODELS, OTHER, shrinking).splitlines()
    assert [orjson.loads(x)["request_id"] for x in lines] == ["r0"]
    with pytest.raises(TypeError):
        C_FORMAT(ts, recs, ["gpt-4o"], OTHER, decision_reasons)  # type: ignore[arg-type]


def as_outcome(rec: Rec) -> object:
    """The record as the gateway's C Outcome, whose fields the C loops read from the struct."""
    from headway.observe._speedups import Outcome

    out = Outcome(0.0, rec.route)
    for name, value in vars(rec).items():
        setattr(out, name, value)
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(records, min_size=1, max_size=5))
def test_c_lines_read_from_an_outcome_equal_the_python_lines(recs: list[Rec]) -> None:
    assert C_FORMAT is not None
    ts = orjson.dumps(TS, option=orjson.OPT_UTC_Z)
    outcomes = [as_outcome(r) for r in recs]
    assert C_FORMAT(ts, outcomes, MODELS, OTHER, decision_reasons) == accesslog._lines(
        TS, recs, MODELS
    )


def test_the_c_outcome_has_the_python_observations_fields_and_defaults() -> None:
    import gc

    from headway.gateway._observation import PyObservation
    from headway.observe._speedups import Outcome

    py, c = PyObservation(1.25, "chat"), Outcome(1.25, "chat")
    fields = PyObservation.__slots__
    assert sorted(f for f in dir(c) if not f.startswith("_")) == sorted(fields)
    for name in fields:
        assert type(getattr(c, name)) is type(getattr(py, name)), name
        assert getattr(c, name) == getattr(py, name), name
    c.tenant = "t"
    assert c.tenant == "t"
    del c.tenant  # a deleted field reads as missing, in Python and in the C loops
    with pytest.raises(AttributeError):
        _ = c.tenant
    with pytest.raises(AttributeError):
        c.unknown = 1  # type: ignore[attr-defined]
    assert Outcome(start=2.0, route="x").start == 2.0
    with pytest.raises(TypeError):
        Outcome(1.0)  # type: ignore[call-arg]
    name = "".join(["ten", "ant"])  # built at run time: interned by setattr/getattr
    setattr(c, name, "u")
    assert getattr(c, name) == c.tenant == "u"
    del c.tenant
    with pytest.raises(AttributeError):
        del c.tenant  # already gone
    c.tenant = "v"  # a deleted field can be set again
    assert c.tenant == "v"
    assert c.__class__ is Outcome  # other names: the generic path
    # Left to reference counting (no holder of an outcome is reachable from its fields): the
    # cyclic GC neither counts nor traverses the hundreds waiting for their batch.
    assert not gc.is_tracked(c)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.floats(min_value=0.0, max_value=1e6),
            st.floats(min_value=0.0, max_value=1e-3),
        ),
        max_size=40,
    )
)
def test_c_stream_gaps_equal_the_python_gaps(stamps: list[float]) -> None:
    from headway.observe import _metrics as metrics
    from headway.observe._buckets import INTER_TOKEN_BUCKETS

    bounds = tuple(float(b) for b in INTER_TOKEN_BUCKETS)
    c_counts, py_counts = [0] * (len(bounds) + 1), [0] * (len(bounds) + 1)
    c_total = metrics._add_gaps(c_counts, bounds, stamps)  # unsorted stamps: negative gaps too
    assert repr(c_total) == repr(metrics._python_add_gaps(py_counts, bounds, stamps))
    assert c_counts == py_counts
    assert sum(c_counts) == max(len(stamps) - 1, 0)


def _fresh(value: str | None) -> str | None:
    """An equal but distinct str (a model name parsed per request is a new object)."""
    return None if value is None else "".join(list(value))


few = st.sampled_from(["gpt-4o", "acme", None, 'x"y']).map(_fresh) | st.sampled_from(
    ["gpt-4o", "acme"]
)
alike = st.builds(
    Rec, few, few, few, few, few, st.sampled_from([200, 200, 503, 1000]), few, seconds,
    st.one_of(st.none(), seconds), tokens, tokens, st.booleans(), attributes, st.none(),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(alike, min_size=1, max_size=12))
def test_c_lines_for_runs_of_equal_labels_equal_the_python_lines(recs: list[Rec]) -> None:
    """Lines whose labels equal the line before's copy its text: the same bytes, whatever
    object holds each label (equal strings, distinct objects; Outcomes or records)."""
    assert C_FORMAT is not None
    ts = orjson.dumps(TS, option=orjson.OPT_UTC_Z)
    expected = accesslog._lines(TS, recs, MODELS)
    assert C_FORMAT(ts, recs, MODELS, OTHER, decision_reasons) == expected
    outcomes = [as_outcome(r) for r in recs]
    assert C_FORMAT(ts, outcomes, MODELS, OTHER, decision_reasons) == expected
