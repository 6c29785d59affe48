"""The root of the config: ``GatewayConfig``, one immutable value describing a whole gateway."""

from __future__ import annotations

from typing import Literal, Self, TypeVar

from pydantic import ConfigDict, ValidationInfo, model_validator

from ._base import Section
from ._crossref import check_references
from ._flags import FlagConfig
from ._observe import ObserveConfig
from ._routes import ModelConfig
from ._server import AdmissionConfig, ServerConfig, StateConfig
from ._slo import SloConfig
from ._tenants import TenantConfig
from ._upstreams import PoolConfig, SimUpstreamConfig

__all__ = ["CURRENT_VERSION", "SKIP_REFERENCES", "GatewayConfig"]

#: The config format version this Headway reads (older ones are migrated first).
CURRENT_VERSION = 1
#: Validation context key: the loader checks references itself, on the raw data, so it can
#: report them together with type errors.
SKIP_REFERENCES = "headway_skip_references"


class GatewayConfig(Section):
    """Headway gateway configuration (one YAML file). Every field is documented; run
    'headway check FILE' to validate one and 'headway config schema' for this schema."""

    model_config = ConfigDict(title="Headway gateway config")  # merged with Section's

    version: Literal[1]
    """Config format version; this Headway knows 1."""
    server: ServerConfig = ServerConfig()
    """Listening addresses, workers, shutdown and request deadlines."""
    state: StateConfig = StateConfig()
    """Where shared state lives (memory or Redis)."""
    admission: AdmissionConfig = AdmissionConfig()
    """Gateway-wide priority admission and load shedding."""
    observe: ObserveConfig = ObserveConfig()
    """Metrics and the access log (both on by default)."""
    sims: tuple[SimUpstreamConfig, ...] = ()
    """Simulated upstreams started in-process, addressed as 'sim://NAME'."""
    pools: tuple[PoolConfig, ...] = ()
    """Pools of upstream endpoints."""
    models: tuple[ModelConfig, ...] = ()
    """Public model names and their routing."""
    tenants: tuple[TenantConfig, ...] = ()
    """API keys, priorities and quotas."""
    flags: tuple[FlagConfig, ...] = ()
    """Feature flags evaluated per request (tenant, tier, sticky percentage)."""
    slos: tuple[SloConfig, ...] = ()
    """Service level objectives with multiwindow burn-rate alerts (SRE workbook ch. 5)."""

    @model_validator(mode="after")
    def _check_references(self, info: ValidationInfo) -> Self:
        if info.context and info.context.get(SKIP_REFERENCES):
            return self
        issues = check_references(self.model_dump())
        if issues:
            raise ValueError("; ".join(str(issue) for issue in issues))
        return self

    def pool(self, name: str) -> PoolConfig:
        """The pool called ``name`` (``KeyError`` if none)."""
        return _by_name(self.pools, name)

    def model(self, name: str) -> ModelConfig:
        """The model called ``name`` (``KeyError`` if none)."""
        return _by_name(self.models, name)

    def tenant(self, name: str) -> TenantConfig:
        """The tenant called ``name`` (``KeyError`` if none)."""
        return _by_name(self.tenants, name)

    def sim(self, name: str) -> SimUpstreamConfig:
        """The sim called ``name`` (``KeyError`` if none)."""
        return _by_name(self.sims, name)


_Named = TypeVar("_Named", PoolConfig, ModelConfig, TenantConfig, SimUpstreamConfig)


def _by_name(items: tuple[_Named, ...], name: str) -> _Named:
    for item in items:
        if item.name == name:
            return item
    raise KeyError(name)
