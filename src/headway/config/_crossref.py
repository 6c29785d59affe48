"""Checks that span sections: names are unique, every reference resolves, fallbacks form no
cycle, no API key opens two tenants, and each sim serves the model routed to it.

The checks read the plain data (the YAML tree after ``${ENV}`` expansion, or a model dump), not
validated models, so they run even when some sections failed type validation: one pass reports
every mistake. Entries too broken to read are skipped here (type validation reports them).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ._errors import ConfigIssue
from ._flags import check_flags
from ._rollout import check_rollout_references
from ._secrets import normalize_key
from ._slo import slo_issues
from ._upstreams import sim_name

__all__ = ["check_references"]


def _entries(data: dict[str, Any], section: str) -> Iterator[tuple[int, dict[str, Any]]]:
    items = data.get(section)
    if isinstance(items, list | tuple):
        for index, item in enumerate(items):
            if isinstance(item, dict):
                yield index, item


def _strings(value: Any) -> Iterator[tuple[int, str]]:
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if isinstance(item, str):
                yield index, item


def _known(names: dict[str, int]) -> str:
    return ", ".join(names) if names else "none declared"


def _names(
    data: dict[str, Any], section: str, kind: str, issues: list[ConfigIssue]
) -> dict[str, int]:
    """Name -> index of the first entry with it; a repeated name is an issue."""
    seen: dict[str, int] = {}
    for index, entry in _entries(data, section):
        name = entry.get("name")
        if not isinstance(name, str):
            continue
        if name in seen:
            issues.append(
                ConfigIssue(
                    f"{section}[{index}].name",
                    f"duplicate {kind} name '{name}' (first at {section}[{seen[name]}])",
                )
            )
        else:
            seen[name] = index
    return seen


def check_references(data: dict[str, Any]) -> list[ConfigIssue]:
    """Every cross-section mistake in ``data`` (a config as plain dicts and lists)."""
    issues: list[ConfigIssue] = []
    sims = _names(data, "sims", "sim", issues)
    pools = _names(data, "pools", "pool", issues)
    models = _names(data, "models", "model", issues)
    tenants = _names(data, "tenants", "tenant", issues)
    sim_models = _sim_models(data, sims)
    pool_sims = _check_endpoints(data, sims, issues)
    _check_models(data, pools, models, pool_sims, sim_models, issues)
    issues.extend(check_rollout_references(data, pools, pool_sims, sim_models))
    _check_fallback_cycles(data, models, issues)
    _check_tenants(data, models, issues)
    issues.extend(check_flags(data, tenants))
    _check_slos(data, models, issues)
    return issues


def _check_slos(data: dict[str, Any], models: dict[str, int], issues: list[ConfigIssue]) -> None:
    _names(data, "slos", "SLO", issues)
    for s, slo in _entries(data, "slos"):
        path = f"slos[{s}]"
        model = slo.get("model")
        if isinstance(model, str) and model != "*" and model not in models:
            issues.append(
                ConfigIssue(
                    f"{path}.model",
                    f"unknown model '{model}' (known: {_known(models)}; '*' covers all)",
                )
            )
        issues.extend(slo_issues(slo, path))


def _sim_models(data: dict[str, Any], sims: dict[str, int]) -> dict[str, set[str]]:
    served: dict[str, set[str]] = {}
    for index, entry in _entries(data, "sims"):
        name = entry.get("name")
        if isinstance(name, str) and sims.get(name) == index:
            served[name] = {m for _, m in _strings(entry.get("models"))}
    return served


def _check_endpoints(
    data: dict[str, Any], sims: dict[str, int], issues: list[ConfigIssue]
) -> dict[str, list[tuple[str, str]]]:
    """Unknown sims and repeated URLs; returns pool name -> [(endpoint path, sim name)]."""
    pool_sims: dict[str, list[tuple[str, str]]] = {}
    for p, pool in _entries(data, "pools"):
        pool_name = pool.get("name")
        seen_urls: dict[str, int] = {}
        for e, endpoint in _entries(pool, "endpoints"):
            url = endpoint.get("url")
            if not isinstance(url, str):
                continue
            path = f"pools[{p}].endpoints[{e}]"
            if url in seen_urls:
                issues.append(
                    ConfigIssue(
                        f"{path}.url",
                        f"endpoint '{url}' is listed twice in this pool "
                        f"(first at pools[{p}].endpoints[{seen_urls[url]}]); raise its weight",
                    )
                )
                continue
            seen_urls[url] = e
            name = sim_name(url)
            if name is None:
                continue
            if name not in sims:
                issues.append(
                    ConfigIssue(f"{path}.url", f"unknown sim '{name}' (known: {_known(sims)})")
                )
            elif isinstance(pool_name, str):
                pool_sims.setdefault(pool_name, []).append((path, name))
    return pool_sims


def _check_models(
    data: dict[str, Any],
    pools: dict[str, int],
    models: dict[str, int],
    pool_sims: dict[str, list[tuple[str, str]]],
    sim_models: dict[str, set[str]],
    issues: list[ConfigIssue],
) -> None:
    server = data.get("server")
    max_timeout = server.get("max_timeout", 3600.0) if isinstance(server, dict) else 3600.0
    for m, model in _entries(data, "models"):
        path = f"models[{m}]"
        name = model.get("name")
        pool = model.get("pool")
        if isinstance(pool, str) and pool not in pools:
            issues.append(
                ConfigIssue(f"{path}.pool", f"unknown pool '{pool}' (known: {_known(pools)})")
            )
        upstream = model.get("upstream_model")
        if upstream is None:
            upstream = name
        if isinstance(pool, str) and isinstance(upstream, str):
            for endpoint_path, sim in pool_sims.get(pool, ()):
                served = sim_models.get(sim, set())
                if upstream not in served:
                    issues.append(
                        ConfigIssue(
                            f"{path}.upstream_model",
                            f"sim '{sim}' ({endpoint_path} of pool '{pool}') does not serve "
                            f"model '{upstream}' (it serves: {', '.join(sorted(served))})",
                        )
                    )
        seen: set[str] = set()
        for f, fallback in _strings(model.get("fallbacks")):
            where = f"{path}.fallbacks[{f}]"
            if fallback == name:
                issues.append(ConfigIssue(where, "a model cannot fall back to itself"))
            elif fallback not in models:
                issues.append(
                    ConfigIssue(where, f"unknown model '{fallback}' (known: {_known(models)})")
                )
            elif fallback in seen:
                issues.append(ConfigIssue(where, f"'{fallback}' is listed twice"))
            seen.add(fallback)
        timeout = model.get("timeout")
        if (
            isinstance(timeout, int | float)
            and isinstance(max_timeout, int | float)
            and timeout > max_timeout
        ):
            issues.append(
                ConfigIssue(
                    f"{path}.timeout",
                    f"timeout ({timeout:g}) must not exceed server.max_timeout ({max_timeout:g})",
                )
            )


def _check_fallback_cycles(
    data: dict[str, Any], models: dict[str, int], issues: list[ConfigIssue]
) -> None:
    """Report each group of models that fall back to one another once, at its first model in
    file order, with the shortest cycle through it."""
    graph: dict[str, list[str]] = {}
    for m, model in _entries(data, "models"):
        name = model.get("name")
        if isinstance(name, str) and models.get(name) == m:
            graph[name] = [
                f for _, f in _strings(model.get("fallbacks")) if f in models and f != name
            ]
    reach = {name: _reachable(name, graph) for name in graph}
    done: set[str] = set()
    for start in graph:  # file order
        if start in done or start not in reach[start]:
            continue
        group = {n for n in reach[start] if start in reach.get(n, ())}
        done |= group
        cycle = _shortest_cycle(start, graph)
        issues.append(
            ConfigIssue(
                f"models[{models[start]}].fallbacks",
                "fallback cycle: " + " -> ".join([*cycle, start]),
            )
        )


def _reachable(start: str, graph: dict[str, list[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(graph.get(start, ()))
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return seen


def _shortest_cycle(start: str, graph: dict[str, list[str]]) -> list[str]:
    """Breadth-first: the shortest path start -> ... that returns to ``start``."""
    parent: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for nxt in graph.get(node, ()):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return path[::-1]
                if nxt not in parent:
                    parent[nxt] = node
                    following.append(nxt)
        frontier = following
    return [start]


def _check_tenants(data: dict[str, Any], models: dict[str, int], issues: list[ConfigIssue]) -> None:
    owners: dict[str, str] = {}  # key digest -> path of its first use
    for t, tenant in _entries(data, "tenants"):
        path = f"tenants[{t}]"
        for i, model in _strings(tenant.get("models")):
            if model != "*" and model not in models:
                issues.append(
                    ConfigIssue(
                        f"{path}.models[{i}]",
                        f"unknown model '{model}' (known: {_known(models)}; '*' allows all)",
                    )
                )
        for k, key in _strings(tenant.get("keys")):
            try:
                digest = normalize_key(key)
            except ValueError:
                continue  # reported by type validation
            where = f"{path}.keys[{k}]"
            first = owners.get(digest)
            if first is None:
                owners[digest] = where
            else:
                issues.append(ConfigIssue(where, f"the same API key is already used at {first}"))
