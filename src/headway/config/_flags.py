"""Feature flags in config: typed variants, a default, and ordered targeting rules.

A flag is evaluated per request (``headway.rollout.FlagEvaluator``): the first rule whose
conditions all hold serves its variant; none matching serves ``default``. A rule with a
``percentage`` also needs the request's bucket (murmur3 of flag name and targeting key, see
``headway.rollout._bucket``) below that percentage, counted from bucket 0, so raising the
percentage only ever adds requesters.

Semantic checks (variant values of the declared type, known variants and tenants, unique names)
run with the other cross-section checks on plain data (``check_flags``), so each mistake is
reported at its exact path, e.g. ``flags[0].rules[1].variant``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator

from ._base import Section
from ._errors import ConfigIssue
from ._tenants import PriorityName

__all__ = [
    "FlagConfig",
    "FlagRouteConfig",
    "FlagRule",
    "FlagType",
    "check_flags",
    "value_matches",
]

#: The value types of OpenFeature's typed evaluation API.
FlagType = Literal["bool", "string", "int", "float", "object"]

_TYPE_WORDS: dict[str, str] = {
    "bool": "true or false",
    "string": "a string",
    "int": "an integer",
    "float": "a number",
    "object": "a mapping",
}


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(_BOOL_NAME.format(value=str(value).lower()))
    return value


_BOOL_NAME = (
    "variant names are strings, but YAML reads an unquoted on/off/yes/no/true/false as "
    "the boolean {value}: quote the name (e.g. 'on')"
)

#: A variant's name; a YAML boolean (unquoted ``on``) is refused with a hint.
VariantName = Annotated[str, BeforeValidator(_no_bool), Field(min_length=1)]


class FlagRule(Section):
    """Serve ``variant`` when every condition given here holds (conditions left out always
    hold)."""

    tenants: tuple[str, ...] | None = Field(default=None, min_length=1)
    """The request's tenant is one of these."""
    tiers: tuple[PriorityName, ...] | None = Field(default=None, min_length=1)
    """The request's priority is one of these ('sheddable', 'default', 'critical')."""
    attributes: dict[str, tuple[str | int | float | bool, ...]] = {}
    """Each named request attribute equals one of the listed values."""
    percentage: float | None = Field(default=None, ge=0, le=100)
    """Only this share of targeting keys (0..100, 0.01 resolution), sticky per key: the same
    key always gets the same answer, and raising the percentage keeps every key already in.
    Requests without a targeting key get the caller's default with an error. All percentage
    rules of a flag share the key's one bucket, so after a 10% rule a 30% rule gets the next
    20% of keys."""
    variant: VariantName
    """The variant served when the rule matches."""


class FlagConfig(Section):
    """A feature flag: a typed value chosen per request by tenant, tier and percentage."""

    name: str = Field(min_length=1)
    """The flag key code asks for; also salts the percentage hash."""
    type: FlagType = "bool"
    """Value type of every variant: bool, string, int, float or object."""
    variants: dict[str, Any] = Field(min_length=1)
    """Named values, e.g. {on: true, off: false}."""
    default: VariantName
    """The variant served when no rule matches."""
    rules: tuple[FlagRule, ...] = ()
    """Targeting rules, tried in order; the first match wins."""
    description: str = ""
    """What the flag switches, for the people who read the config."""

    @field_validator("variants", mode="before")
    @classmethod
    def _string_names(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for name in value:
                _no_bool(name)
        return value


class FlagRouteConfig(Section):
    """Serve some of a model's requests on another configured model, chosen per request by a
    flag: the flag is evaluated with the request's tenant, the tenant's priority and a
    targeting key (the 'x-headway-targeting-key' header, else the OpenAI 'user' field, else
    the tenant), and a variant listed here sends the request to its model. Any other variant,
    or a failed evaluation, serves the model itself."""

    flag: str = Field(min_length=1)
    """Name of the flag (any type: variants are matched by name)."""
    variants: dict[VariantName, str] = Field(min_length=1)
    """Flag variant -> the configured model that serves it, e.g. {v2: sim-large-v2}. The
    target serves as if asked directly (its canary split applies), but the tenant needs
    access only to the model it asked for."""


def check_flags(data: dict[str, Any], tenants: dict[str, int]) -> list[ConfigIssue]:
    """Every semantic mistake in ``data['flags']`` and in the models' ``flag_route`` sections;
    ``tenants`` maps declared tenant names to their index."""
    issues = _check_flag_routes(data)
    seen: dict[str, int] = {}
    for f, flag in _entries(data.get("flags")):
        path = f"flags[{f}]"
        name = flag.get("name")
        if isinstance(name, str):
            if name in seen:
                issues.append(
                    ConfigIssue(
                        f"{path}.name",
                        f"duplicate flag name '{name}' (first at flags[{seen[name]}])",
                    )
                )
            else:
                seen[name] = f
        variants = flag.get("variants")
        if not isinstance(variants, dict):
            continue  # type validation reports it
        kind = flag.get("type", "bool")
        if kind in _TYPE_WORDS:
            for variant, value in variants.items():
                if not value_matches(kind, value):
                    issues.append(
                        ConfigIssue(
                            f"{path}.variants.{variant}",
                            f"expected {_TYPE_WORDS[kind]} (the flag's type is '{kind}'), "
                            f"got {value!r}",
                        )
                    )
        known = ", ".join(str(v) for v in variants) or "none declared"
        default = flag.get("default")
        if isinstance(default, str) and default not in variants:
            issues.append(
                ConfigIssue(f"{path}.default", f"unknown variant '{default}' (known: {known})")
            )
        for r, rule in _entries(flag.get("rules")):
            variant = rule.get("variant")
            if isinstance(variant, str) and variant not in variants:
                issues.append(
                    ConfigIssue(
                        f"{path}.rules[{r}].variant",
                        f"unknown variant '{variant}' (known: {known})",
                    )
                )
            listed = rule.get("tenants")
            for t, tenant in enumerate(listed if isinstance(listed, list | tuple) else ()):
                if isinstance(tenant, str) and tenant not in tenants:
                    declared = ", ".join(tenants) or "none declared"
                    issues.append(
                        ConfigIssue(
                            f"{path}.rules[{r}].tenants[{t}]",
                            f"unknown tenant '{tenant}' (known: {declared})",
                        )
                    )
    return issues


def _check_flag_routes(data: dict[str, Any]) -> list[ConfigIssue]:
    """Unknown flags, variants and models in ``models[].flag_route``; a target must not route
    by flag itself (one hop keeps every request's model predictable)."""
    issues: list[ConfigIssue] = []
    flags = {f.get("name"): f for _, f in _entries(data.get("flags"))}
    models = {m.get("name"): m for _, m in _entries(data.get("models"))}
    for m, model in _entries(data.get("models")):
        route = model.get("flag_route")
        if not isinstance(route, dict):
            continue
        path = f"models[{m}].flag_route"
        name = route.get("flag")
        flag = flags.get(name) if isinstance(name, str) else None
        if isinstance(name, str) and flag is None:
            known = ", ".join(str(n) for n in flags) or "none declared"
            issues.append(ConfigIssue(f"{path}.flag", f"unknown flag '{name}' (known: {known})"))
        variants = route.get("variants")
        if not isinstance(variants, dict):
            continue
        declared = flag.get("variants") if flag is not None else None
        for variant, target in variants.items():
            where = f"{path}.variants.{variant}"
            if isinstance(declared, dict) and variant not in declared:
                known = ", ".join(str(v) for v in declared)
                issues.append(
                    ConfigIssue(where, f"flag '{name}' has no variant '{variant}' (known: {known})")
                )
            if not isinstance(target, str):
                continue
            if target == model.get("name"):
                issues.append(ConfigIssue(where, "a model cannot route to itself"))
            elif target not in models:
                known = ", ".join(str(n) for n in models)
                issues.append(ConfigIssue(where, f"unknown model '{target}' (known: {known})"))
            elif isinstance(models[target].get("flag_route"), dict):
                issues.append(
                    ConfigIssue(where, f"model '{target}' has a flag_route itself (one hop only)")
                )
    return issues


def value_matches(kind: str, value: Any) -> bool:
    """Whether ``value`` is a valid value of flag type ``kind`` (bools are not numbers here)."""
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "object":
        return isinstance(value, dict)
    return False


def _entries(items: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    if isinstance(items, list | tuple):
        for index, item in enumerate(items):
            if isinstance(item, dict):
                yield index, item
