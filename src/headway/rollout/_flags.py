"""Feature flag evaluation with OpenFeature's semantics: typed answers that never raise.

``FlagEvaluator`` is built once per config (``FlagEvaluator.from_config``) and called per
request with the request's context. Every call returns a :class:`Resolution`: the value, the
variant that supplied it and the reason (OpenFeature's reason and error codes), so a caller can
log or count why a request got what it got. Anything that goes wrong (unknown flag, a value of
another type than the caller asked for, a percentage rule without a targeting key) yields the
caller's default value with reason ``ERROR`` and an error code, never an exception: a flag must
not be able to fail a request.

Percentage rules use sticky buckets (``_bucket.bucket(flag name, targeting key)``, murmur3),
counted from bucket 0, so a ramp from 10% to 20% keeps every key that was in at 10%.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Generic, TypeVar, cast

from headway.config import FlagConfig, FlagRule, GatewayConfig
from headway.config._flags import value_matches
from headway.core import Context, Priority

from ._bucket import bucket, percent_to_buckets

__all__ = [
    "TARGETING_KEY_ATTRIBUTE",
    "ErrorCode",
    "EvaluationContext",
    "FlagEvaluator",
    "Reason",
    "Resolution",
]

_T = TypeVar("_T")

#: The ``Context.attributes`` entry the gateway sets to the request's sticky key (user or
#: conversation id); :meth:`EvaluationContext.of` reads it.
TARGETING_KEY_ATTRIBUTE = "targeting_key"


class Reason(StrEnum):
    """Why a flag has its value (OpenFeature's resolution reasons)."""

    #: The flag has no rules: its default variant is the only answer.
    STATIC = "STATIC"
    #: A rule without a percentage matched.
    TARGETING_MATCH = "TARGETING_MATCH"
    #: A percentage rule matched (the key's bucket is inside the percentage).
    SPLIT = "SPLIT"
    #: The flag has rules but none matched: its default variant.
    DEFAULT = "DEFAULT"
    #: Evaluation failed; the value is the caller's default.
    ERROR = "ERROR"


class ErrorCode(StrEnum):
    """What went wrong in an ``ERROR`` resolution (OpenFeature's error codes)."""

    FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
    TYPE_MISMATCH = "TYPE_MISMATCH"
    TARGETING_KEY_MISSING = "TARGETING_KEY_MISSING"
    GENERAL = "GENERAL"


@dataclass(frozen=True, slots=True)
class Resolution(Generic[_T]):
    """The answer for one flag and one request."""

    flag_key: str
    value: _T
    reason: Reason
    #: The variant served; ``None`` when the value is the caller's default (an error).
    variant: str | None = None
    error_code: ErrorCode | None = None
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class EvaluationContext:
    """What rules may look at: the sticky key, tenant, tier and free-form attributes."""

    #: The key percentage rules hash (a user, conversation or tenant id).
    targeting_key: str | None = None
    tenant: str | None = None
    priority: Priority | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, ctx: Context, targeting_key: str | None = None) -> EvaluationContext:
        """From a request's :class:`~headway.core.Context`; the targeting key defaults to
        ``ctx.attributes['targeting_key']``."""
        if targeting_key is None:
            key = ctx.attributes.get(TARGETING_KEY_ATTRIBUTE)
            targeting_key = key if isinstance(key, str) else None
        return cls(targeting_key, ctx.tenant, ctx.priority, ctx.attributes)


_EMPTY = EvaluationContext()


class _Error(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class FlagEvaluator:
    """Evaluates the flags of one config; immutable, so a reload swaps in a new one."""

    def __init__(self, flags: Iterable[FlagConfig] = ()) -> None:
        self._flags = {flag.name: flag for flag in flags}

    @classmethod
    def from_config(cls, config: GatewayConfig) -> FlagEvaluator:
        return cls(config.flags)

    def keys(self) -> list[str]:
        """The flag names this evaluator knows."""
        return list(self._flags)

    def get_boolean_details(
        self, key: str, default: bool, context: EvaluationContext | Context | None = None
    ) -> Resolution[bool]:
        return self._resolve(key, "bool", default, context)

    def get_string_details(
        self, key: str, default: str, context: EvaluationContext | Context | None = None
    ) -> Resolution[str]:
        return self._resolve(key, "string", default, context)

    def get_integer_details(
        self, key: str, default: int, context: EvaluationContext | Context | None = None
    ) -> Resolution[int]:
        return self._resolve(key, "int", default, context)

    def get_float_details(
        self, key: str, default: float, context: EvaluationContext | Context | None = None
    ) -> Resolution[float]:
        resolution = self._resolve(key, "float", default, context)
        if resolution.reason is not Reason.ERROR and isinstance(resolution.value, int):
            return replace(resolution, value=float(resolution.value))  # an int variant: 1 -> 1.0
        return resolution

    def get_object_details(
        self,
        key: str,
        default: Mapping[str, Any],
        context: EvaluationContext | Context | None = None,
    ) -> Resolution[Mapping[str, Any]]:
        return self._resolve(key, "object", default, context)

    def _resolve(
        self, key: str, kind: str, default: _T, context: EvaluationContext | Context | None
    ) -> Resolution[_T]:
        try:
            flag = self._flags.get(key)
            if flag is None:
                raise _Error(ErrorCode.FLAG_NOT_FOUND, f"no flag named '{key}'")
            if flag.type != kind:
                raise _Error(
                    ErrorCode.TYPE_MISMATCH, f"flag '{key}' is of type {flag.type}, not {kind}"
                )
            ctx = _context(context)
            variant, reason = _choose(flag, ctx)
            value = flag.variants[variant]
            if not value_matches(kind, value):  # only a config built without validation
                raise _Error(ErrorCode.TYPE_MISMATCH, f"variant '{variant}' is not a {kind}")
            return Resolution(key, cast(_T, value), reason, variant)
        except _Error as exc:
            return Resolution(key, default, Reason.ERROR, None, exc.code, str(exc))
        except Exception as exc:  # never fail the request over a flag
            return Resolution(key, default, Reason.ERROR, None, ErrorCode.GENERAL, repr(exc))


def _context(context: EvaluationContext | Context | None) -> EvaluationContext:
    if context is None:
        return _EMPTY
    if isinstance(context, Context):
        return EvaluationContext.of(context)
    return context


def _choose(flag: FlagConfig, ctx: EvaluationContext) -> tuple[str, Reason]:
    if not flag.rules:
        return flag.default, Reason.STATIC
    for rule in flag.rules:
        if not _conditions_hold(rule, ctx):
            continue
        if rule.percentage is None:
            return rule.variant, Reason.TARGETING_MATCH
        if ctx.targeting_key is None:
            raise _Error(
                ErrorCode.TARGETING_KEY_MISSING,
                f"flag '{flag.name}' has a percentage rule and the request has no targeting key",
            )
        if bucket(flag.name, ctx.targeting_key) < percent_to_buckets(rule.percentage):
            return rule.variant, Reason.SPLIT
    return flag.default, Reason.DEFAULT


def _conditions_hold(rule: FlagRule, ctx: EvaluationContext) -> bool:
    if rule.tenants is not None and ctx.tenant not in rule.tenants:
        return False
    if rule.tiers is not None and ctx.priority not in rule.tiers:
        return False
    for name, allowed in rule.attributes.items():
        if name not in ctx.attributes or ctx.attributes[name] not in allowed:
            return False
    return True
