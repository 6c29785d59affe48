"""Feature flags: config validation with field paths, OpenFeature-style evaluation (typed values,
reasons, default on error), and sticky murmur3 percentage buckets that never reshuffle on a ramp."""

from __future__ import annotations

import itertools

import pytest

from headway.config import ConfigError, FlagConfig, diff_configs, parse_config
from headway.core import Context, Priority
from headway.rollout import (
    BUCKETS,
    ErrorCode,
    EvaluationContext,
    FlagEvaluator,
    Reason,
    Resolution,
    bucket,
)

TENANTS = """
tenants:
  - {name: free, keys: [k-free], priority: sheddable}
  - {name: pro, keys: [k-pro], priority: critical}
"""

FLAGS = (
    "version: 1\n"
    + TENANTS
    + """
flags:
  - name: static-limit
    type: int
    variants: {small: 10, big: 100}
    default: small
  - name: new-router
    variants: {'on': true, 'off': false}
    default: 'off'
    rules:
      - {tenants: [pro], variant: 'on'}
      - {tiers: [critical], attributes: {region: [eu, us]}, variant: 'on'}
      - {percentage: 10, variant: 'on'}
  - name: model
    type: string
    variants: {a: sim-small, b: sim-large}
    default: a
    rules: [{percentage: 50, variant: b}]
  - name: temperature
    type: float
    variants: {cool: 0, warm: 0.7}
    default: warm
  - name: guard
    type: object
    variants: {strict: {max_attempts: 1}, loose: {max_attempts: 3}}
    default: loose
    rules: [{tenants: [free], variant: strict}]
"""
)


def evaluator(text: str = FLAGS) -> FlagEvaluator:
    return FlagEvaluator.from_config(parse_config(text))


# -- config -----------------------------------------------------------------------------------


def test_flags_section_loads_and_diffs_by_name() -> None:
    config = parse_config(FLAGS)
    assert [f.name for f in config.flags] == [
        "static-limit",
        "new-router",
        "model",
        "temperature",
        "guard",
    ]
    assert config.flags[1].rules[1].tiers == (Priority.CRITICAL,)
    ramped = parse_config(FLAGS.replace("{percentage: 10,", "{percentage: 20,"))
    assert diff_configs(config, ramped) == ["flags['new-router'].rules[2].percentage: 10.0 -> 20.0"]


def test_no_flags_is_the_default() -> None:
    config = parse_config("version: 1\n")
    assert config.flags == ()
    assert FlagEvaluator.from_config(config).keys() == []


def test_every_flag_mistake_is_reported_at_its_path() -> None:
    text = (
        "version: 1\n"
        + TENANTS
        + """flags:
  - name: f
    type: int
    variants: {a: 1, b: true, c: 2.5}
    default: z
    rules:
      - {tenants: [pro, ghost], variant: q}
      - {percentage: 101, variant: a}
      - {tiers: [urgent], variant: a}
      - {variant: a, when: x}
  - name: f
    type: colour
    variants: {}
    default: a
  - name: yaml-trap
    variants: {on: true, off: false}
    default: off
"""
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    assert [str(issue).rsplit(" (line", 1)[0] for issue in caught.value.errors] == [
        "flags[0].variants.b: expected an integer (the flag's type is 'int'), got True",
        "flags[0].variants.c: expected an integer (the flag's type is 'int'), got 2.5",
        "flags[0].default: unknown variant 'z' (known: a, b, c)",
        "flags[0].rules[0].variant: unknown variant 'q' (known: a, b, c)",
        "flags[0].rules[0].tenants[1]: unknown tenant 'ghost' (known: free, pro)",
        "flags[0].rules[1].percentage: Input should be less than or equal to 100 (got 101)",
        "flags[0].rules[2].tiers[0]: unknown priority 'urgent'; expected one of sheddable, "
        "default, critical",
        "flags[0].rules[3].when: unknown field 'when' (known: tenants, tiers, attributes, "
        "percentage, variant)",
        "flags[1].name: duplicate flag name 'f' (first at flags[0])",
        "flags[1].type: Input should be 'bool', 'string', 'int', 'float' or 'object' "
        "(got 'colour')",
        "flags[1].variants: must not be empty",
        "flags[1].default: unknown variant 'a' (known: none declared)",
        "flags[2].variants: variant names are strings, but YAML reads an unquoted "
        "on/off/yes/no/true/false as the boolean true: quote the name (e.g. 'on')",
        "flags[2].default: variant names are strings, but YAML reads an unquoted "
        "on/off/yes/no/true/false as the boolean false: quote the name (e.g. 'on')",
    ]


# -- evaluation -------------------------------------------------------------------------------


def test_static_flag() -> None:
    flags = evaluator()
    assert flags.get_integer_details("static-limit", 0) == Resolution(
        "static-limit", 10, Reason.STATIC, "small"
    )
    assert flags.get_float_details("temperature", 1.0) == Resolution(
        "temperature", 0.7, Reason.STATIC, "warm"
    )


def test_targeting_rules_in_order() -> None:
    flags = evaluator()
    pro = EvaluationContext(targeting_key="u1", tenant="pro")
    assert flags.get_boolean_details("new-router", False, pro) == Resolution(
        "new-router", True, Reason.TARGETING_MATCH, "on"
    )
    eu_critical = EvaluationContext(
        targeting_key="u1", tenant="x", priority=Priority.CRITICAL, attributes={"region": "eu"}
    )
    assert flags.get_boolean_details("new-router", False, eu_critical).reason == (
        Reason.TARGETING_MATCH
    )
    # Same tier, region not listed: falls through to the percentage rule.
    asia = EvaluationContext(
        targeting_key="u1", priority=Priority.CRITICAL, attributes={"region": "asia"}
    )
    result = flags.get_boolean_details("new-router", False, asia)
    assert result.reason in (Reason.SPLIT, Reason.DEFAULT)
    assert result.value is (result.reason is Reason.SPLIT)
    assert result.variant == ("on" if result.value else "off")


def test_split_and_default_follow_the_bucket() -> None:
    flags = evaluator()
    for user in (f"user-{i}" for i in range(200)):
        result = flags.get_boolean_details("new-router", False, EvaluationContext(user))
        inside = bucket("new-router", user) < 1000
        assert result == Resolution(
            "new-router",
            inside,
            Reason.SPLIT if inside else Reason.DEFAULT,
            "on" if inside else "off",
        )


def test_object_flag_by_tenant_from_a_request_context() -> None:
    flags = evaluator()
    free = Context(tenant="free", attributes={"targeting_key": "conv-1"})
    assert flags.get_object_details("guard", {}, free) == Resolution(
        "guard", {"max_attempts": 1}, Reason.TARGETING_MATCH, "strict"
    )
    assert flags.get_object_details("guard", {}, Context(tenant="pro")).value == {"max_attempts": 3}


def test_request_context_supplies_the_targeting_key() -> None:
    flags = evaluator()
    for conversation in ("c1", "c2", "c3", "c4"):
        ctx = Context(attributes={"targeting_key": conversation})
        expected = "b" if bucket("model", conversation) < BUCKETS // 2 else "a"
        assert flags.get_string_details("model", "x", ctx).variant == expected
        direct = flags.get_string_details(
            "model", "x", EvaluationContext.of(Context(), conversation)
        )
        assert direct.variant == expected


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (lambda f: f.get_boolean_details("missing", True), ErrorCode.FLAG_NOT_FOUND),
        (lambda f: f.get_string_details("new-router", "dflt"), ErrorCode.TYPE_MISMATCH),
        (lambda f: f.get_integer_details("temperature", 7), ErrorCode.TYPE_MISMATCH),
        (lambda f: f.get_boolean_details("new-router", True), ErrorCode.TARGETING_KEY_MISSING),
    ],
)
def test_errors_return_the_callers_default(call: object, code: ErrorCode) -> None:
    result = call(evaluator())  # type: ignore[operator]
    assert result.reason is Reason.ERROR
    assert result.error_code is code
    assert result.variant is None
    assert result.error_message
    assert result.value in (True, "dflt", 7)


def test_a_broken_flag_never_raises() -> None:
    # Built without validation (model_construct): the default variant does not exist.
    broken = FlagConfig.model_construct(
        name="b", type="bool", variants={"on": True}, default="nope", rules=(), description=""
    )
    mistyped = FlagConfig.model_construct(
        name="m", type="bool", variants={"on": "yes"}, default="on", rules=(), description=""
    )
    flags = FlagEvaluator([broken, mistyped])
    general = flags.get_boolean_details("b", True)
    assert (general.value, general.reason, general.error_code) == (
        True,
        Reason.ERROR,
        ErrorCode.GENERAL,
    )
    assert flags.get_boolean_details("m", False).error_code is ErrorCode.TYPE_MISMATCH


# -- sticky percentage buckets ----------------------------------------------------------------


def _murmur3_32(data: bytes, seed: int = 0) -> int:
    """Reference MurmurHash3 x86_32 (Austin Appleby's algorithm), independent of mmh3."""
    c1, c2, mask = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF
    h = seed
    tail_start = len(data) - len(data) % 4
    for i in range(0, tail_start, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        k = (k * c2) & mask
        h ^= k
        h = ((h << 13) | (h >> 19)) & mask
        h = (h * 5 + 0xE6546B64) & mask
    k = 0
    tail = data[tail_start:]
    for i, byte in enumerate(tail):
        k |= byte << (8 * i)
    if tail:
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        k = (k * c2) & mask
        h ^= k
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & mask
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & mask
    h ^= h >> 16
    return h


@pytest.mark.parametrize(
    ("text", "seed", "expected"),
    [  # published MurmurHash3_x86_32 test vectors
        (b"", 0, 0),
        (b"", 1, 0x514E28B7),
        (b"hello", 0, 0x248BFA47),
        (b"The quick brown fox jumps over the lazy dog", 0, 0x2E4FF723),
        (b"\x00\x00\x00\x00", 0, 0x2362F9DE),
    ],
)
def test_murmur3_known_vectors(text: bytes, seed: int, expected: int) -> None:
    import mmh3

    assert _murmur3_32(text, seed) == expected
    assert mmh3.hash(text, seed, signed=False) == expected


def test_bucket_is_murmur3_of_flag_key_and_targeting_key() -> None:
    for flag, key in [("new-router", "user-1"), ("model", "conv-42"), ("f", "")]:
        assert bucket(flag, key) == _murmur3_32(f"{flag}:{key}".encode()) % BUCKETS


def test_ramping_up_never_reshuffles() -> None:
    """Every key in at 10% is still in at 20%, 50% and 100%; nobody is in at 0%."""
    users = [f"user-{i}" for i in range(20_000)]

    def enrolled(percent: float) -> set[str]:
        text = FLAGS.replace("{percentage: 10,", f"{{percentage: {percent},")
        flags = evaluator(text)
        return {
            u
            for u in users
            if flags.get_boolean_details("new-router", False, EvaluationContext(u)).value
        }

    steps = [enrolled(p) for p in (0, 1, 10, 20, 50, 100)]
    assert steps[0] == set()
    assert steps[-1] == set(users)
    for smaller, larger in itertools.pairwise(steps):
        assert smaller <= larger
    assert len(steps[2]) < len(steps[3])


def test_distribution_over_100k_keys() -> None:
    """10% of 100k keys: binomial sd = sqrt(n p (1 - p)) ~ 95; allow 5 sd. Buckets overall are
    uniform: a chi-square over 10 deciles stays far below the 0.1% critical value (27.9, 9 dof)."""
    n = 100_000
    buckets = [bucket("new-router", f"user-{i}") for i in range(n)]
    inside = sum(1 for b in buckets if b < 1000)
    assert abs(inside - 10_000) < 5 * 95
    deciles = [0] * 10
    for b in buckets:
        deciles[b * 10 // BUCKETS] += 1
    chi2 = sum((count - n / 10) ** 2 / (n / 10) for count in deciles)
    assert chi2 < 27.9
    # Another flag orders the same users differently (the flag key salts the hash).
    other = [bucket("model", f"user-{i}") < 1000 for i in range(n)]
    both = sum(1 for b, o in zip(buckets, other, strict=True) if b < 1000 and o)
    assert abs(both - 1000) < 5 * 30  # independent: ~1% of users are in both 10% groups
