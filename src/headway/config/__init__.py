"""Headway's typed config: one YAML file, validated whole, every mistake reported with its path.

``load_config(path)`` / ``parse_config(text)`` return an immutable ``GatewayConfig`` or raise a
``ConfigError`` listing every issue (``path: message``). ``${ENV}`` references are expanded at
load, tenant API keys are hashed at load (``hash_key``), ``config_json_schema()`` exports JSON
Schema for editors, and ``diff_configs`` says what a reload changes. With no path,
``load_config`` reads the embedded default (``DEFAULT_CONFIG_PATH``, identical to
``examples/headway.yaml``): a self-contained demo gateway with simulated upstreams.
"""

from ._check import check_main, schema_main
from ._diff import diff_configs
from ._errors import ConfigError, ConfigIssue
from ._flags import FlagConfig, FlagRouteConfig, FlagRule, FlagType
from ._loader import DEFAULT_CONFIG_PATH, MIGRATIONS, load_config, parse_config
from ._observe import ObserveConfig
from ._rollout import CanaryConfig, ShadowConfig
from ._root import CURRENT_VERSION, GatewayConfig
from ._routes import CacheConfig, HedgeConfig, ModelConfig, RetryConfig
from ._schema import config_json_schema
from ._secrets import hash_key
from ._server import AdmissionConfig, ServerConfig, ServerLimits, StateConfig, parse_host_port
from ._slo import SloAlertConfig, SloConfig
from ._tenants import TenantConfig
from ._tracing import OTEL_MODULES, TracingConfig, missing_otel_module
from ._upstreams import (
    AffinityConfig,
    CircuitBreakerConfig,
    ConcurrencyConfig,
    EndpointConfig,
    OutlierConfig,
    PoolConfig,
    PoolTimeoutsConfig,
    SimFaultsConfig,
    SimUpstreamConfig,
)

__all__ = [
    "CURRENT_VERSION",
    "DEFAULT_CONFIG_PATH",
    "MIGRATIONS",
    "OTEL_MODULES",
    "AdmissionConfig",
    "AffinityConfig",
    "CacheConfig",
    "CanaryConfig",
    "CircuitBreakerConfig",
    "ConcurrencyConfig",
    "ConfigError",
    "ConfigIssue",
    "EndpointConfig",
    "FlagConfig",
    "FlagRouteConfig",
    "FlagRule",
    "FlagType",
    "GatewayConfig",
    "HedgeConfig",
    "ModelConfig",
    "ObserveConfig",
    "OutlierConfig",
    "PoolConfig",
    "PoolTimeoutsConfig",
    "RetryConfig",
    "ServerConfig",
    "ServerLimits",
    "ShadowConfig",
    "SimFaultsConfig",
    "SimUpstreamConfig",
    "SloAlertConfig",
    "SloConfig",
    "StateConfig",
    "TenantConfig",
    "TracingConfig",
    "check_main",
    "config_json_schema",
    "diff_configs",
    "hash_key",
    "load_config",
    "missing_otel_module",
    "parse_config",
    "parse_host_port",
    "schema_main",
]
