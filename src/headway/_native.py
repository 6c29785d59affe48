"""Which modules the install compiles with mypyc, and the guard that never runs a stale build.

``setup.py`` compiles the request path's modules (:data:`COMPILED`) with mypyc into C
extensions next to their sources. A compiled module shadows its ``.py`` (Python imports an
extension first), so an edited source whose build is older would silently run the old code.
And mypyc compiles against the types of everything those modules import, so an edit to any
module of the package can make a build wrong. The build therefore records every ``.py`` of the
package (size, modification time, SHA-256) in ``_native.json``; at import of :mod:`headway`,
:func:`guard` compares them with the files on disk (hashing only those whose size or time
moved: about a millisecond). When any differs, when the record is missing, or when
``HEADWAY_PURE_PYTHON=1``, every module is imported from its source instead. All or none:
compiled modules call each other natively, so mixing a compiled caller with a source callee
would still run the stale callee.

This file is read by ``setup.py`` without importing :mod:`headway`, so it imports nothing of it.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

#: The modules compiled with mypyc: the data path a proxied request runs through, and the guard
#: primitives (used alone too). What stays interpreted: cold code (config, admin, rollouts,
#: CLI), exception classes (mypyc cannot compile subclasses of built-in exceptions), and the
#: SSE relay (an async generator, which mypyc does not compile).
COMPILED: tuple[str, ...] = (
    "headway.core._clock",
    "headway.core._context",
    "headway.core._deadline",
    "headway.core._hooks",
    "headway.core._ready",
    "headway.core._service",
    "headway.core._timers",
    "headway.guard.breaker._breaker",
    "headway.guard.breaker._config",
    "headway.guard.breaker._state",
    "headway.guard.breaker._window",
    "headway.guard.cache._cache",
    "headway.guard.cache._lru",
    "headway.guard.coalesce._coalesce",
    "headway.guard.coalesce._detach",
    "headway.guard.coalesce._keys",
    "headway.guard.concurrency._aimd",
    "headway.guard.concurrency._gradient2",
    "headway.guard.concurrency._limit",
    "headway.guard.concurrency._limiter",
    "headway.guard.concurrency._listeners",
    "headway.guard.concurrency._rate",
    "headway.guard.fallback._fallback",
    "headway.guard.hedge._hedge",
    "headway.guard.hedge._latency",
    "headway.guard.ratelimit._limiter",
    "headway.guard.retry._backoff",
    "headway.guard.retry._budget",
    "headway.guard.retry._policy",
    "headway.guard.retry._retry",
    "headway.guard.shed._codel",
    "headway.guard.shed._queue",
    "headway.guard.shed._shedder",
    "headway.guard.timeout._timeout",
    "headway.http._client_conn",
    "headway.http._client_origin",
    "headway.http._client_pool",
    "headway.http._client_response",
    "headway.http._limits",
    "headway.http._names",
    "headway.http._protocol",
    "headway.http._request",
    "headway.http._response",
    "headway.http._server",
    "headway.observe._accesslog",
    "headway.observe._metrics",
    "headway.observe._sketch",
    "headway.observe._window",
    "headway.store._memory",
    "headway.store._gcra",
    "headway.store._limit_store",
    "headway.gateway._app",
    "headway.gateway._openai",
    "headway.gateway._tenants",
    "headway.gateway._upstreams",
    "headway.gateway._routes",
    "headway.gateway._recorder",
    "headway.gateway._stream_end",
    "headway.gateway._runtime",
    "headway.gateway.balance._affinity",
    "headway.gateway.balance._endpoint",
    "headway.gateway.balance._ewma",
    "headway.gateway.balance._key",
    "headway.gateway.balance._outlier",
    "headway.gateway.balance._p2c",
    "headway.gateway.balance._ring",
    "headway.gateway.balance._set",
    "headway.gateway.balance._strategy",
)

#: The mypyc group: one shared library, ``headway_compiled__mypyc*.so``, holds all their code.
#: It sits beside the package, not in it: mypyc derives each module's ``__file__`` from where
#: the group's library is, and gets it wrong by one folder for a library inside the package.
GROUP = "headway_compiled"
#: The record of the build, next to this file: ``{"modules": {name: sha256 of the source}}``.
MANIFEST = "_native.json"
PURE_ENV = "HEADWAY_PURE_PYTHON"

_PACKAGE_DIR = Path(__file__).resolve().parent
_ROOT = _PACKAGE_DIR.parent


def source_path(module: str) -> Path:
    """Where a compiled module's source is (``headway.http._protocol``: ``.../_protocol.py``)."""
    return _ROOT.joinpath(*module.split(".")).with_suffix(".py")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record_sources() -> dict[str, list[object]]:
    """What the build records: every ``.py`` of the package, by path relative to it."""
    record: dict[str, list[object]] = {}
    for path in sorted(_PACKAGE_DIR.rglob("*.py")):
        stat = path.stat()
        record[path.relative_to(_PACKAGE_DIR).as_posix()] = [
            stat.st_size,
            stat.st_mtime_ns,
            digest(path),
        ]
    return record


def stale_sources() -> list[str] | None:
    """The package's sources that differ from the build's record (relative paths); None when
    there is no record (nothing was compiled, or the build did not finish)."""
    try:
        recorded = json.loads((_PACKAGE_DIR / MANIFEST).read_text())["sources"]
        items = [
            (str(name), int(size), int(mtime), str(sha))
            for name, (size, mtime, sha) in recorded.items()
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    stale = []
    for name, size, mtime, sha in items:
        path = _PACKAGE_DIR / name
        try:
            stat = path.stat()
            if (stat.st_size, stat.st_mtime_ns) == (size, mtime) or digest(path) == sha:
                continue
        except OSError:
            pass
        stale.append(name)
    return stale


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Imports Headway's modules from their ``.py`` files, ahead of any extension beside them,
    except the compiled ones while the build is current (``native``). So an extension left by
    an earlier build of a module no longer compiled is never picked up either."""

    def __init__(self, native: bool) -> None:
        self.native = native
        self.compiled = frozenset(COMPILED)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("headway.") or (self.native and fullname in self.compiled):
            return None
        source = source_path(fullname)
        if not source.is_file():  # a package, or a C-only module (observe._speedups)
            return None
        return importlib.util.spec_from_file_location(fullname, source)


#: Whether the compiled modules are the ones running (set once, by :func:`guard`).
NATIVE = False


def guard() -> None:
    """Run the compiled modules only when they were built from the sources on disk."""
    global NATIVE
    pure = os.environ.get(PURE_ENV, "") == "1"
    stale = None if pure or not COMPILED else stale_sources()
    NATIVE = stale == [] and _group_built()
    if stale:
        shown = ", ".join(stale[:3]) + (" ..." if len(stale) > 3 else "")
        warnings.warn(
            f"headway: the compiled build is older than its sources ({shown}); running "
            "the sources (slower). Rebuild: pip install -e . (or bash scripts/bootstrap.sh)",
            RuntimeWarning,
            stacklevel=2,
        )
    sys.meta_path.insert(0, _SourceFinder(NATIVE))


def _group_built() -> bool:
    """Every extension of the build is there (a build that stopped half way is not used)."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    group = _ROOT / (GROUP + "__mypyc" + suffix)
    return group.exists() and all(source_path(m).with_suffix(suffix).exists() for m in COMPILED)
