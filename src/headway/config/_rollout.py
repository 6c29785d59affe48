"""Per-model rollout settings: a weighted canary split and shadow traffic to a candidate pool.

Both name other pools; those references (and that the pools' sims serve the model) are checked
with the other cross-section references in ``_crossref``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from ._base import Section
from ._errors import ConfigIssue
from ._keys import check_header_name, check_key_source

__all__ = ["CanaryConfig", "ShadowConfig", "check_rollout_references"]


class CanaryConfig(Section):
    """Send a share of the model's requests to a canary pool, sticky per tenant, user or header
    value; a tester picks a side with the override header ('always' = canary, 'never' =
    stable). The weight is a starting point: a canary controller changes it at run time."""

    pool: str
    """Name of the pool serving the canary."""
    upstream_model: str | None = Field(default=None, min_length=1)
    """Model name sent to the canary pool (default: the model's own upstream_model)."""
    weight: float = Field(default=0.0, ge=0, le=100)
    """Percent of requests (of sticky keys) served by the canary; 0.01% resolution."""
    sticky: str = "tenant"
    """What keeps a caller on one side: 'tenant', 'user' (the OpenAI 'user' field, else the
    tenant) or 'header:<name>' (e.g. a conversation id; else the tenant)."""
    override_header: str = "x-headway-canary"
    """Request header that forces a side: 'always' (canary) or 'never' (stable)."""
    fallback_to_stable: bool = True
    """Serve a request on stable when the canary fails before the first byte, within a retry
    budget of the model's retries.budget_percent (the canary's blast radius stays small)."""

    @field_validator("sticky")
    @classmethod
    def _check_sticky(cls, value: str) -> str:
        return check_key_source(value, ("tenant", "user"))

    @field_validator("override_header")
    @classmethod
    def _check_header(cls, value: str) -> str:
        return check_header_name(value)


class ShadowConfig(Section):
    """Mirror a sample of the model's whole (non-streamed) answers to a candidate pool after
    the client has its answer, compare the two, and measure the noise floor against a second
    copy of the stable pool (Twitter's Diffy). Mirrored requests never delay or fail clients."""

    pool: str
    """Name of the candidate pool."""
    upstream_model: str | None = Field(default=None, min_length=1)
    """Model name sent to the candidate (default: the model's own upstream_model)."""
    sample: float = Field(default=1.0, ge=0, le=1)
    """Share of eligible requests mirrored, before the caps (Envoy's request_mirror_policies
    runtime_fraction defaults to 100%; the caps below bound the cost)."""
    max_per_minute: float = Field(default=60.0, gt=0)
    """Mirrored requests per minute at most, with bursts of one minute's worth (our choice:
    one a second is enough for a diff rate within a few points in ten minutes)."""
    max_concurrency: int = Field(default=4, ge=1)
    """Mirrors in flight at most; more are skipped, never queued (our choice)."""
    noise_pool: str | None = None
    """A second copy of the stable pool; mirrors also go there to measure stable-vs-stable
    differences (the noise floor). Null: no noise floor."""
    noise_sample: float = Field(default=1.0, ge=0, le=1)
    """Share of mirrored requests also sent to the noise pool."""
    ignore_fields: tuple[str, ...] = ("id", "created", "system_fingerprint")
    """Field names ignored wherever they appear when comparing answers."""
    timeout: float = Field(default=60.0, gt=0)
    """Seconds a mirrored request may take (it has no client deadline of its own)."""
    max_length_ratio: float = Field(default=1.5, gt=1)
    """Text lengths differ when the longer is more than this many times the shorter."""
    max_latency_ratio: float = Field(default=2.0, gt=1)
    """Latencies differ beyond this ratio either way."""
    min_similarity: float = Field(default=0.8, ge=0, le=1)
    """Texts differ below this similarity (weighted Jaccard of word tokens)."""


def check_rollout_references(
    data: dict[str, Any],
    pools: dict[str, int],
    pool_sims: dict[str, list[tuple[str, str]]],
    sim_models: dict[str, set[str]],
) -> list[ConfigIssue]:
    """Every mistake in the pools the models' ``canary`` and ``shadow`` sections name: unknown
    pools, a pool split or mirrored to itself, and sims that do not serve the model."""
    issues: list[ConfigIssue] = []
    models = data.get("models")
    if not isinstance(models, list | tuple):
        return issues
    for m, model in enumerate(models):
        if not isinstance(model, dict):
            continue
        own_pool = model.get("pool")
        upstream = model.get("upstream_model") or model.get("name")
        for section, fields in (("canary", ("pool",)), ("shadow", ("pool", "noise_pool"))):
            entry = model.get(section)
            if not isinstance(entry, dict):
                continue
            for field in fields:
                pool = entry.get(field)
                if not isinstance(pool, str):
                    continue
                path = f"models[{m}].{section}.{field}"
                if pool not in pools:
                    known = ", ".join(pools) if pools else "none declared"
                    issues.append(ConfigIssue(path, f"unknown pool '{pool}' (known: {known})"))
                    continue
                if field == "pool" and pool == own_pool:
                    issues.append(
                        ConfigIssue(path, f"'{pool}' is the model's own pool; name another one")
                    )
                    continue
                if field == "noise_pool" and pool == entry.get("pool"):
                    issues.append(
                        ConfigIssue(
                            path,
                            "the noise pool must be a copy of the stable pool, not the "
                            f"candidate pool '{pool}'",
                        )
                    )
                    continue
                # The noise pool is a copy of stable: it serves the model's own upstream name.
                wanted = upstream if field == "noise_pool" else entry.get("upstream_model")
                wanted = wanted or upstream
                if not isinstance(wanted, str):
                    continue
                hint = f"; set {section}.upstream_model" if field == "pool" else ""
                for endpoint_path, sim in pool_sims.get(pool, ()):
                    served = sim_models.get(sim, set())
                    if wanted not in served:
                        issues.append(
                            ConfigIssue(
                                path,
                                f"sim '{sim}' ({endpoint_path} of pool '{pool}') does not serve "
                                f"model '{wanted}' (it serves: {', '.join(sorted(served))}){hint}",
                            )
                        )
    return issues
