"""Prefix affinity: consistent hashing with bounded loads, and prompt-prefix keys."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from headway.core import ManualClock
from headway.gateway.balance import Endpoint, PrefixAffinity, hash64, prompt_prefix_key

KEYS = [f"conversation-{i}" for i in range(4000)]


def _pool(clock: ManualClock, n: int, weights: list[float] | None = None) -> list[Endpoint[Any]]:
    ws = weights or [1.0] * n
    return [Endpoint(f"ep{i}", None, weight=ws[i], clock=clock) for i in range(n)]


def _assign(strategy: PrefixAffinity, pool: list[Endpoint[Any]]) -> dict[str, Endpoint[Any]]:
    out: dict[str, Endpoint[Any]] = {}
    for key in KEYS:
        ep = strategy.pick(pool, key)
        assert ep is not None
        out[key] = ep
    return out


def test_hash64_is_stable_across_processes() -> None:
    # A fixed value: BLAKE2b-64, never Python's salted hash().
    assert hash64("abc") == int.from_bytes(bytes.fromhex("d8bb14d833d59559"), "little")
    assert 0 <= hash64("anything") < 2**64


def test_same_key_same_endpoint(clock: ManualClock) -> None:
    pool = _pool(clock, 4)
    strategy = PrefixAffinity()
    first = _assign(strategy, pool)
    # A second strategy instance (another worker) agrees, as does a rebuilt ring.
    assert _assign(PrefixAffinity(), list(pool)) == first


def test_keys_spread_evenly(clock: ManualClock) -> None:
    pool = _pool(clock, 4)
    counts = Counter(_assign(PrefixAffinity(), pool).values())
    for ep in pool:
        assert counts[ep] / len(KEYS) == pytest.approx(0.25, abs=0.06)


def test_keys_spread_by_weight(clock: ManualClock) -> None:
    pool = _pool(clock, 2, [3.0, 1.0])
    counts = Counter(_assign(PrefixAffinity(), pool).values())
    assert counts[pool[0]] / len(KEYS) == pytest.approx(0.75, abs=0.06)


def test_removing_an_endpoint_moves_only_its_keys(clock: ManualClock) -> None:
    pool = _pool(clock, 5)
    strategy = PrefixAffinity()
    before = _assign(strategy, pool)
    gone = pool[2]
    after = _assign(strategy, [ep for ep in pool if ep is not gone])
    moved = {k for k in KEYS if before[k] is not after[k]}
    assert moved == {k for k in KEYS if before[k] is gone}
    assert moved  # the removed endpoint did own keys


def test_excluded_owner_walks_to_the_next_and_only_its_keys_move(clock: ManualClock) -> None:
    pool = _pool(clock, 4)
    strategy = PrefixAffinity()
    before = _assign(strategy, pool)
    tried = {pool[1]}
    for key in KEYS:
        ep = strategy.pick(pool, key, exclude=tried)
        assert ep is not pool[1]
        if before[key] is not pool[1]:
            assert ep is before[key]
        else:
            # The successor on the ring is where the key would go without pool[1].
            assert ep is strategy.pick([e for e in pool if e is not pool[1]], key)


def test_everything_excluded_falls_back_to_the_owner(clock: ManualClock) -> None:
    pool = _pool(clock, 3)
    strategy = PrefixAffinity()
    owner = strategy.pick(pool, "k")
    assert strategy.pick(pool, "k", exclude=set(pool)) is owner


def test_bounded_load_skips_the_hot_endpoint(clock: ManualClock) -> None:
    pool = _pool(clock, 4)
    strategy = PrefixAffinity(load_factor=1.25)
    key = KEYS[0]
    owner = strategy.pick(pool, key)
    assert owner is not None
    # Total in flight 8, all on the owner: its bound is ceil(1.25 * 9 / 4) = 3 < 8 -> skip.
    owner.outstanding = 8
    spill = strategy.pick(pool, key)
    assert spill is not owner
    successor = strategy.pick([e for e in pool if e is not owner], key)
    assert spill is successor
    # One in flight everywhere: total 4, bound ceil(1.25 * 5 / 4) = 2, and 1 < 2: stays home.
    for ep in pool:
        ep.outstanding = 1
    assert strategy.pick(pool, key) is owner
    # Two on the owner, one elsewhere: total 5, bound ceil(1.25 * 6 / 4) = 2: spills.
    owner.outstanding = 2
    assert strategy.pick(pool, key) is successor


def test_without_bound_hot_endpoint_keeps_its_keys(clock: ManualClock) -> None:
    pool = _pool(clock, 4)
    strategy = PrefixAffinity(load_factor=None)
    owner = strategy.pick(pool, "hot")
    assert owner is not None
    owner.outstanding = 1000
    assert strategy.pick(pool, "hot") is owner


def test_no_key_falls_back_to_p2c(clock: ManualClock) -> None:
    a, b = pool = _pool(clock, 2)
    b.outstanding = 2
    strategy = PrefixAffinity(rng=random.Random(1))
    assert all(strategy.pick(pool) is a for _ in range(50))


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError, match="load_factor"):
        PrefixAffinity(load_factor=1.0)
    with pytest.raises(ValueError, match="vnodes"):
        PrefixAffinity(vnodes_per_weight=0)


# -- prompt_prefix_key ------------------------------------------------------------------------


def test_prefix_key_is_stable_and_compact() -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello"},
    ]
    key = prompt_prefix_key(messages)
    assert key == prompt_prefix_key([dict(m) for m in messages])
    assert len(key) == 16
    int(key, 16)


def test_prefix_key_same_for_later_turns_of_a_conversation() -> None:
    turn1 = [{"role": "system", "content": "S"}, {"role": "user", "content": "first question"}]
    turn2 = [
        *turn1,
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": "follow-up"},
    ]
    assert prompt_prefix_key(turn1) == prompt_prefix_key(turn2)
    other = [{"role": "system", "content": "S"}, {"role": "user", "content": "another topic"}]
    assert prompt_prefix_key(other) != prompt_prefix_key(turn1)


def test_prefix_key_uses_only_the_first_chars() -> None:
    long_system = "x" * 300
    a = [{"role": "system", "content": long_system}, {"role": "user", "content": "A"}]
    b = [{"role": "system", "content": long_system}, {"role": "user", "content": "B"}]
    assert prompt_prefix_key(a) == prompt_prefix_key(b)  # both cut within the system prompt
    assert prompt_prefix_key(a, chars=400) != prompt_prefix_key(b, chars=400)


def test_prefix_key_roles_matter_and_parts_count() -> None:
    as_system = [{"role": "system", "content": "X"}]
    as_user = [{"role": "user", "content": "X"}]
    assert prompt_prefix_key(as_system) != prompt_prefix_key(as_user)
    parts = [{"role": "user", "content": [{"type": "text", "text": "X"}, {"type": "image_url"}]}]
    assert prompt_prefix_key(parts) == prompt_prefix_key(as_user)


def test_prefix_key_for_completion_prompts() -> None:
    assert prompt_prefix_key("abc" * 200) == prompt_prefix_key("abc" * 100)
    assert prompt_prefix_key(["hello", "ignored"]) == prompt_prefix_key("hello")
    assert prompt_prefix_key(None) == prompt_prefix_key("")
