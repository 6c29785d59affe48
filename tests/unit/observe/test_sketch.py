"""DDSketch: exact bucket behaviour, merging, and the relative-accuracy guarantee."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headway.core import ManualClock
from headway.observe import DDSketch, SlidingSketch
from headway.observe._sketch import ROOM

ALPHA = 0.01


def true_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


def test_empty_sketch_is_nan() -> None:
    sketch = DDSketch()
    assert math.isnan(sketch.quantile(0.5))
    assert sketch.count == 0


def test_single_value_is_exact_thanks_to_min_max_clamp() -> None:
    sketch = DDSketch()
    sketch.add(0.123)
    assert sketch.quantiles((0.0, 0.5, 1.0)) == [0.123, 0.123, 0.123]


def test_zero_and_negative_values_count_as_zero() -> None:
    sketch = DDSketch()
    for v in (0.0, -1.0, 0.0, 5.0):
        sketch.add(v)
    assert sketch.count == 4
    assert sketch.zeros == 3
    assert sketch.quantile(0.5) == 0.0
    assert sketch.quantile(1.0) == 5.0
    assert sketch.min == 0.0


def test_bucket_representative_is_within_alpha() -> None:
    sketch = DDSketch(ALPHA)
    for v in (1.0, 2.0, 3.0, 4.0, 100.0):
        sketch.add(v)
    # the median (rank 2 of 0..4) is 3.0, reported by its bucket's representative
    estimate = sketch.quantile(0.5)
    assert estimate != 3.0
    assert abs(estimate - 3.0) <= ALPHA * 3.0


def test_add_with_count_equals_repeated_adds() -> None:
    a, b = DDSketch(), DDSketch()
    a.add(0.5, 10)
    for _ in range(10):
        b.add(0.5)
    assert a.count == b.count == 10
    assert a.sum == pytest.approx(5.0)
    assert a.quantiles((0.1, 0.9)) == b.quantiles((0.1, 0.9))


def test_merge_with_different_alpha_is_refused() -> None:
    with pytest.raises(ValueError, match="alpha"):
        DDSketch(0.01).merge(DDSketch(0.02))


def test_collapse_keeps_the_highest_buckets_exact() -> None:
    """The store spans at most max_buckets buckets: the lowest collapse into the lowest one
    kept, and every value within that span of the largest keeps the relative accuracy."""
    sketch = DDSketch(ALPHA, max_buckets=100)
    values = [1.05**i for i in range(200)]  # ~2.4 buckets apart: a span of ~490
    for v in values:
        sketch.add(v)
    assert len(sketch._counts) == 100
    assert sketch.count == 200
    assert sum(sketch.buckets().values()) == 200  # nothing lost, only the low ones merged
    for q in (0.9, 0.99):
        truth = true_quantile(values, q)
        assert abs(sketch.quantile(q) - truth) <= ALPHA * truth
    assert sketch.quantile(0.1) > true_quantile(values, 0.1) * (1 + ALPHA)  # collapsed: high


def test_add_many_grows_the_store_both_ways_and_equals_adds() -> None:
    one, many = DDSketch(), DDSketch()
    batches = [[0.01, 0.02], [5.0, 0.001], [0.0, -1.0, 1e-7], [120.0]]
    for batch in batches:
        many.add_many(batch)
        for v in batch:
            one.add(v)
    assert many.buckets() == one.buckets()
    assert (many.count, many.zeros, many.min, many.max) == (one.count, one.zeros, 0.0, 120.0)
    assert many.quantiles((0.1, 0.5, 0.9)) == one.quantiles((0.1, 0.5, 0.9))


def test_merge_into_a_collapsed_store_counts_the_low_ones_in_its_first_bucket() -> None:
    small = DDSketch(ALPHA, max_buckets=20)
    small.add_many([100.0, 110.0, 1000.0])  # a span over 20: collapsed
    low = DDSketch(ALPHA)
    low.add_many([0.5, 1.0])
    small.merge(low)
    assert small.count == 5
    assert sum(small.buckets().values()) == 5
    assert min(small.buckets()) == small._offset


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError, match="alpha"):
        DDSketch(0.0)
    with pytest.raises(ValueError, match="quantile"):
        DDSketch().quantile(1.5)


values_strategy = st.lists(
    st.one_of(st.just(0.0), st.floats(min_value=1e-6, max_value=1e4)), min_size=1, max_size=300
)
quantiles_strategy = st.sampled_from([0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0])


@settings(max_examples=200, deadline=None)
@given(values=values_strategy, q=quantiles_strategy)
def test_quantile_within_relative_accuracy(values: list[float], q: float) -> None:
    sketch = DDSketch(ALPHA)
    for v in values:
        sketch.add(v)
    truth = true_quantile(values, q)
    assert abs(sketch.quantile(q) - truth) <= ALPHA * truth * (1 + 1e-9)


@settings(max_examples=100, deadline=None)
@given(left=values_strategy, right=values_strategy, q=quantiles_strategy)
def test_merge_equals_sketch_of_concatenation(
    left: list[float], right: list[float], q: float
) -> None:
    a, b, whole = DDSketch(ALPHA), DDSketch(ALPHA), DDSketch(ALPHA)
    for v in left:
        a.add(v)
        whole.add(v)
    for v in right:
        b.add(v)
        whole.add(v)
    a.merge(b)
    assert a.count == whole.count
    assert a.quantile(q) == whole.quantile(q)
    truth = true_quantile(left + right, q)
    assert abs(a.quantile(q) - truth) <= ALPHA * truth * (1 + 1e-9)


# -- sliding window ------------------------------------------------------------------------------


def test_sliding_window_forgets_whole_slices(clock: ManualClock) -> None:
    window = SlidingSketch(60.0, 6, clock=clock)  # slices of 10 s; clock starts at 1000.0
    window.add(1.0)  # slice 100
    clock.step(10.0)
    window.add(2.0)  # slice 101
    assert window.count == 2
    clock.step(49.999)  # t = 1059.999, slice 105: slice 100 still live
    assert window.count == 2
    clock.step(0.001)  # t = 1060.0, slice 106: slice 100 has left the window
    assert window.count == 1
    assert window.quantiles((0.5,)) == [2.0]
    clock.step(10.0)
    assert window.count == 0
    assert math.isnan(window.quantiles((0.5,))[0])


def test_sliding_window_reuses_a_slot_after_a_full_turn(clock: ManualClock) -> None:
    window = SlidingSketch(60.0, 6, clock=clock)
    window.add(1.0)
    clock.step(60.0)  # the same ring position, one turn later
    window.add(3.0)
    window.add(3.0)
    assert window.count == 2
    assert window.quantiles((0.0, 1.0)) == [3.0, 3.0]


def test_sliding_window_after_a_long_idle_gap(clock: ManualClock) -> None:
    window = SlidingSketch(10.0, 5, clock=clock)
    for i in range(10):
        window.add(float(i + 1))
        clock.step(1.0)
    clock.step(3600.0)
    assert window.count == 0
    window.add(7.0)
    assert window.quantiles((0.5,)) == [7.0]


@settings(max_examples=50, deadline=None)
@given(values=st.lists(st.floats(min_value=1e-3, max_value=120.0), min_size=1, max_size=200))
def test_sliding_window_quantiles_match_a_plain_sketch(values: list[float]) -> None:
    clock = ManualClock()
    window = SlidingSketch(60.0, 6, clock=clock)
    for i, v in enumerate(values):
        window.add(v)
        if i % 20 == 19:
            clock.step(1.0)  # stays within the window
    for q in (0.5, 0.99, 0.999):
        truth = true_quantile(values, q)
        [estimate] = window.quantiles((q,))
        assert abs(estimate - truth) <= ALPHA * truth * (1 + 1e-9)


@pytest.mark.parametrize(
    "before",
    [
        [1e-3, 120.0],  # a wide span kept, zeroed
        [0.5, 0.6],  # a narrow one, below and above which the next values fall
        [1.05**i for i in range(200)],  # a collapsed store
    ],
)
def test_a_cleared_sketch_holds_what_a_new_one_would(before: list[float]) -> None:
    """clear() keeps the store's span, zeroed (the next slice's values mostly fall in it, so
    they are counted once); from then on it must hold what a new sketch holds, collapses
    included."""
    cleared = DDSketch(ALPHA, max_buckets=100)
    cleared.add_many(before)
    cleared.clear()
    assert (cleared.count, cleared.zeros, cleared.sum, cleared.buckets()) == (0, 0, 0.0, {})
    fresh = DDSketch(ALPHA, max_buckets=100)
    batches = [[0.01, 0.02], [0.2, 0.001], [0.0, 1e-7], [1.05**i for i in range(40, 150)], [9.0]]
    for batch in batches:
        cleared.add_many(batch)
        fresh.add_many(batch)
        assert cleared.buckets() == fresh.buckets()
        assert cleared._collapsed == fresh._collapsed
        assert (cleared.count, cleared.zeros, cleared.min, cleared.max) == (
            fresh.count,
            fresh.zeros,
            fresh.min,
            fresh.max,
        )
        assert cleared.quantiles((0.1, 0.5, 0.99)) == fresh.quantiles((0.1, 0.5, 0.99))
    other = DDSketch(ALPHA)
    other.add_many([0.3, 40.0])
    cleared.merge(other)
    fresh.merge(other)
    assert cleared.buckets() == fresh.buckets()


def test_clear_keeps_the_span_so_the_next_values_need_no_growing() -> None:
    sketch = DDSketch(ALPHA)
    sketch.add_many([1e-3, 120.0])
    span = (sketch._offset, len(sketch._counts))
    sketch.clear()
    sketch.add_many([0.01, 5.0])  # inside the kept span: counted in one pass
    assert (sketch._offset, len(sketch._counts)) == span
    assert sketch.count == 2


def test_a_store_grows_with_room_to_spare_and_still_equals_adds() -> None:
    """add_many grows the store past the values that made it grow (a batch outside the store
    is counted twice), within max_buckets; the extra buckets are empty and change nothing."""
    many = DDSketch(ALPHA)
    many.add_many([0.1, 0.2])
    span = len(many._counts)
    assert span > 2 * ROOM  # room on both sides of the two values' ~35 buckets
    many.add_many([0.07, 0.3])  # inside the room: no growing
    assert len(many._counts) == span
    one = DDSketch(ALPHA)
    for v in (0.1, 0.2, 0.07, 0.3):
        one.add(v)
    assert many.buckets() == one.buckets()
    assert many.quantiles((0.01, 0.5, 0.99)) == one.quantiles((0.01, 0.5, 0.99))
    tight = DDSketch(ALPHA, max_buckets=40)
    tight.add_many([0.1, 0.2])  # ~35 buckets: at most 2 a side of room
    assert len(tight._counts) <= 40


def test_merging_a_cleared_sketch_adds_nothing_and_grows_nothing() -> None:
    """A cleared sketch keeps a zeroed span; merged into a narrow store near max_buckets, it
    must not grow or collapse it (a new, empty sketch would not)."""
    wide = DDSketch(ALPHA)
    wide.add_many([1e-3, 100.0])  # a span of ~580 buckets
    wide.clear()
    target = DDSketch(ALPHA, max_buckets=60)
    target.add_many([0.5, 0.8])
    before = (target._offset, len(target._counts), target.buckets())
    target.merge(wide)
    assert (target._offset, len(target._counts), target.buckets()) == before
    assert not target._collapsed
    wide.add_many([0.6])  # one value in the kept span: only its bucket is covered
    target.merge(wide)
    assert not target._collapsed
    assert sum(target.buckets().values()) == 3
