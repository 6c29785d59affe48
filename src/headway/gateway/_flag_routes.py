"""Flag routes: a feature flag chooses, per request, which configured model serves it.

``models[].flag_route`` names a flag and maps some of its variants to other models. On each
request for that model the flag is evaluated (``headway.rollout.FlagEvaluator``, OpenFeature
semantics: it never raises) with the request's tenant, the tenant's priority and a targeting
key; a mapped variant sends the request to that model's route, anything else (an unmapped
variant, an evaluation error) serves the model itself, so a broken flag degrades to the plain
route and never fails a request. The targeting key is the ``x-headway-targeting-key`` header,
else the OpenAI ``user`` field, else the tenant name: percentage rules then stay sticky per
user (or per conversation, when the client sends one as the header).

Each route counts the variants it served, for ``GET /api/flags``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from headway.config import FlagRouteConfig, GatewayConfig
from headway.core import Priority
from headway.rollout import EvaluationContext, FlagEvaluator, Resolution

from ._routes import ModelRoute

__all__ = ["TARGETING_HEADER", "FlagRoute", "build_flag_routes"]

#: Request header carrying the flag targeting key (a user or conversation id).
TARGETING_HEADER = b"x-headway-targeting-key"
#: The count key of requests whose evaluation failed (served by the model itself).
_ERROR = "(error)"


class FlagRoute:
    """One model's flag route: the flag, the variant -> model map, and served counts."""

    __slots__ = ("_resolve", "config", "counts", "model", "targets")

    def __init__(
        self,
        model: str,
        config: FlagRouteConfig,
        resolve: Callable[[EvaluationContext], Resolution[Any]],
        routes: Mapping[str, ModelRoute],
    ) -> None:
        self.model = model
        self.config = config
        self._resolve = resolve
        #: Variant -> (model name, its route); validation guarantees every target exists.
        self.targets = {v: (name, routes[name]) for v, name in config.variants.items()}
        #: Requests served per variant ("(error)": evaluation failed).
        self.counts: dict[str, int] = {}

    def choose(
        self, headers: Mapping[bytes, bytes], user: str | None, tenant: str, priority: Priority
    ) -> tuple[str, ModelRoute] | None:
        """The (model name, route) the flag sends this request to; ``None``: the model itself."""
        key = headers.get(TARGETING_HEADER)
        targeting = key.decode("latin-1") if key else (user or tenant)
        resolution = self._resolve(EvaluationContext(targeting, tenant, priority))
        variant = _ERROR if resolution.variant is None else resolution.variant
        self.counts[variant] = self.counts.get(variant, 0) + 1
        return self.targets.get(variant)

    def snapshot(self) -> dict[str, Any]:
        return {
            "flag": self.config.flag,
            "variants": dict(self.config.variants),
            "served": dict(self.counts),
        }


def build_flag_routes(
    config: GatewayConfig, routes: Mapping[str, ModelRoute], evaluator: FlagEvaluator
) -> dict[str, FlagRoute]:
    """A :class:`FlagRoute` per model that has ``flag_route`` set."""
    types = {flag.name: flag.type for flag in config.flags}
    out: dict[str, FlagRoute] = {}
    for model in config.models:
        route = model.flag_route
        if route is not None:
            resolve = _resolver(evaluator, route.flag, types.get(route.flag, "bool"))
            out[model.name] = FlagRoute(model.name, route, resolve, routes)
    return out


def _resolver(
    evaluator: FlagEvaluator, key: str, kind: str
) -> Callable[[EvaluationContext], Resolution[Any]]:
    """The typed evaluation matching the flag's type: variants are matched by name, so the
    value (and the default, which only an error returns) is not used."""
    if kind == "string":
        return lambda ctx: evaluator.get_string_details(key, "", ctx)
    if kind == "int":
        return lambda ctx: evaluator.get_integer_details(key, 0, ctx)
    if kind == "float":
        return lambda ctx: evaluator.get_float_details(key, 0.0, ctx)
    if kind == "object":
        return lambda ctx: evaluator.get_object_details(key, {}, ctx)
    return lambda ctx: evaluator.get_boolean_details(key, False, ctx)
