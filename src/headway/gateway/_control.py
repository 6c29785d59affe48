"""A gateway that runs from config versions: load the active version at start, follow the store.

Start (:meth:`ControlSettings.preload`), in this order:

1. With a seed file (``headway serve CONFIG --store URL``) and an **empty** store, the file is
   applied as version 1 ("seeded from CONFIG"). A store that already has versions wins; a seed
   file that differs from its latest version is ignored with a warning naming both (apply it
   with ``headway config apply``). So the same command line restarts the same way after any
   number of applies, and the file is only ever a bootstrap.
2. The store's latest version, else (store unreachable, empty, or its latest version no longer
   validates here, e.g. an ``${ENV}`` missing on this host) the last known good file, else the
   seed file; each fallback is logged with its reason. None of them: a clear error, exit 1.

Running (:class:`ControlPlane`): every ``poll_interval`` seconds the store is asked for its
latest version *number* (one indexed ``max()``; the text is fetched only when it changed). A
newer version is built and swapped in with ``Gateway.reload`` (requests in flight finish on the
old runtime); the last known good file is rewritten after each successful load, so it always
holds the last config this gateway actually served. A version that does not validate or build
here is logged once and skipped; the gateway keeps serving what it has. Versions are adopted
in increasing order only, so a poll and an admin-API apply racing each other cannot move the
gateway backwards. Apply and rollback through the admin API go through the same lock and take
effect on this gateway at once; other instances follow within one poll interval. A candidate
config can also be staged for a share of tenants first and then promoted to a version or
aborted (:meth:`ControlPlane.stage`, ``_stage``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from headway.config import ConfigError, GatewayConfig, parse_config
from headway.core import REAL_CLOCK, Clock
from headway.rollout import (
    DEFAULT_LAST_GOOD,
    ApplyResult,
    ConfigVersions,
    LastKnownGood,
    NoActiveConfig,
    load_active_config,
)
from headway.store import (
    ConfigVersion,
    ControlStore,
    StoreError,
    open_control_store,
    sha256_text,
)

from ._stage import StagedConfig, build_staged

if TYPE_CHECKING:
    from ._app import Gateway

__all__ = [
    "DEFAULT_LAST_GOOD",
    "DEFAULT_POLL_INTERVAL",
    "ControlPlane",
    "ControlSettings",
    "Served",
    "StageError",
    "Startup",
]

log = logging.getLogger("headway.control")

#: How often a gateway asks the store for its latest version number. Our choice: a change
#: reaches every instance within ~2 s, and the query is one primary-key max() (microseconds on
#: SQLite, one round trip on PostgreSQL), so even hundreds of instances cost the store little.
DEFAULT_POLL_INTERVAL = 2.0
#: Who a seeded version is attributed to in history and the audit log.
SEED_AUTHOR = "headway serve"

Source = Literal["store", "last-known-good", "file", "embedded"]


class StageError(RuntimeError):
    """Nothing is staged, or a different config is (promote or abort it first)."""


@dataclass(frozen=True, slots=True)
class Served:
    """The config a gateway serves and where it came from (``GET /api/config``)."""

    source: Source
    #: The version number (None for a seed file served without a store).
    version: int | None
    sha256: str | None
    author: str | None = None
    #: Unix seconds the version was created (None when only the file is known).
    created: float | None = None
    message: str | None = None
    #: Why this source and not the store (empty when the store answered).
    reason: str = ""

    @classmethod
    def of(cls, version: ConfigVersion) -> Served:
        return cls(
            "store",
            version.number,
            version.sha256,
            version.author,
            version.created,
            version.message,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "author": self.author,
            "created": self.created,
            "message": self.message,
            "sha256": self.sha256,
            "source": self.source,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Startup:
    """What a gateway starts with: the config and its provenance."""

    config: GatewayConfig
    served: Served
    #: Where it came from (None: built directly, as in tests).
    settings: ControlSettings | None = None

    def plane(
        self, *, store: ControlStore | None = None, clock: Clock = REAL_CLOCK
    ) -> ControlPlane:
        """The control plane that follows the store from here (``settings`` required); see
        :meth:`ControlSettings.plane` for ``store``."""
        assert self.settings is not None, "a Startup from ControlSettings.preload"
        return self.settings.plane(self.served, store=store, clock=clock)


@dataclass(frozen=True, slots=True)
class ControlSettings:
    """How ``headway serve`` reaches the control-plane store."""

    url: str
    last_good: str = DEFAULT_LAST_GOOD
    poll_interval: float = DEFAULT_POLL_INTERVAL
    #: ``headway serve CONFIG``'s file: seeds an empty store, last resort when nothing else.
    seed_path: str | None = None

    def preload(self) -> Startup:
        """Decide the starting config (module docstring); ``NoActiveConfig`` or
        ``ConfigError`` when there is none to serve. Runs its own event loop: call it before
        the gateway's starts (and before forking workers)."""
        seed = None if self.seed_path is None else Path(self.seed_path).read_text("utf-8")

        async def run() -> Startup:
            store = open_control_store(self.url)
            try:
                found = await startup(store, LastKnownGood(self.last_good), seed, self.seed_path)
                return replace(found, settings=self)
            finally:
                await store.aclose()

        return asyncio.run(run())

    def plane(
        self, served: Served, *, store: ControlStore | None = None, clock: Clock = REAL_CLOCK
    ) -> ControlPlane:
        """A control plane for one gateway process. ``store``: a connection to ``url`` the
        process already has (the gateway's, which its rollouts use), borrowed, not closed;
        None: the plane opens and closes its own."""
        return ControlPlane(
            open_control_store(self.url) if store is None else store,
            LastKnownGood(self.last_good),
            served,
            poll_interval=self.poll_interval,
            clock=clock,
            owns_store=store is None,
        )


async def startup(
    store: ControlStore,
    last_good: LastKnownGood,
    seed_text: str | None = None,
    seed_path: str | None = None,
) -> Startup:
    """The config to start with, from the store, the last known good file or the seed."""
    seed_label = seed_path or "<seed>"
    if seed_text is not None:
        await _seed(store, seed_text, seed_label)
    try:
        active = await load_active_config(store, last_good)
    except ConfigError as error:  # the store's latest does not validate on this host
        log.error("the store's latest version does not validate here:\n%s", error)
        try:
            active = await load_active_config(None, last_good)
        except NoActiveConfig:
            raise error from None
        active = replace(active, reason=f"the store's latest version is invalid here: {error}")
    except NoActiveConfig as missing:
        if seed_text is None:
            raise
        log.warning("serving %s: %s", seed_label, missing)
        config = parse_config(seed_text, source=seed_label)
        return Startup(config, Served("file", None, sha256_text(seed_text), reason=str(missing)))
    if active.source == "store":
        version = await store.get_version(active.version)
        served = (
            Served.of(version)
            if version is not None
            else Served("store", active.version, active.sha256)
        )
        log.info("serving config version %d from %s", active.version, store.url)
    else:
        served = Served("last-known-good", active.version, active.sha256, reason=active.reason)
        log.warning(
            "serving config version %d from the last known good file %s: %s",
            active.version,
            last_good.path,
            active.reason,
        )
    return Startup(active.config, served)


async def _seed(store: ControlStore, text: str, label: str) -> None:
    """Apply the seed file as version 1 when the store is empty (warn when it is not)."""
    try:
        latest = await store.latest_version()
        if latest is None:
            result = await ConfigVersions(store).apply(
                text, author=SEED_AUTHOR, message=f"seeded from {label}", source=label
            )
            log.info("the store was empty: %s applied as version %d", label, result.version.number)
        elif latest.sha256 != sha256_text(text):
            log.warning(
                "%s differs from the store's latest version %d, which is served; apply the file "
                "with 'headway config apply %s -m MESSAGE' to serve it",
                label,
                latest.number,
                label,
            )
    except StoreError as exc:
        log.warning("cannot seed the store from %s: %s", label, exc)


class ControlPlane:
    """Config versions for one running gateway: the poller, apply and rollback."""

    def __init__(
        self,
        store: ControlStore,
        last_good: LastKnownGood,
        served: Served,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        clock: Clock = REAL_CLOCK,
        owns_store: bool = True,
    ) -> None:
        self.store = store
        self._owns_store = owns_store
        self.versions = ConfigVersions(store)
        self.last_good = last_good
        self.served = served
        self.poll_interval = poll_interval
        self.loaded_at = time.time()
        #: Called with the new config after each version goes live (``headway serve``
        #: re-freezes the heap there).
        self.after_reload: Callable[[GatewayConfig], object] | None = None
        #: The newest version that did not validate or build here, and why.
        self.rejected: tuple[int, str] | None = None
        #: The store's last error (None while it answers).
        self.store_error: str | None = None
        self._clock = clock
        self._gateway: Gateway | None = None
        self._lock = asyncio.Lock()
        self._poller: asyncio.Task[None] | None = None
        self._poked = asyncio.Event()
        self._behind_warned = 0
        self._retiring: set[asyncio.Task[None]] = set()

    def attach(self, gateway: Gateway, *, poll: bool = True) -> None:
        """Serve ``gateway`` (already started with ``served``'s config): make it answer the
        config routes of its admin API and, with ``poll``, follow the store."""
        self._gateway = gateway
        gateway.admin.control = self
        if poll and self._poller is None:
            self._poller = asyncio.create_task(self._poll_loop())

    def poke(self) -> None:
        """Poll now (SIGHUP) instead of at the next interval."""
        self._poked.set()

    async def aclose(self) -> None:
        gateway = self._gateway
        if gateway is not None and gateway.staged is not None:
            staged, gateway.staged = gateway.staged, None
            await staged.retire(gateway.config.server.drain_timeout)
        for task in list(self._retiring):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        if self._owns_store:
            await self.store.aclose()

    # -- following the store ---------------------------------------------------------------

    async def _poll_loop(self) -> None:
        while True:
            sleep = asyncio.ensure_future(self._clock.sleep(self.poll_interval))
            poked = asyncio.ensure_future(self._poked.wait())
            try:
                await asyncio.wait((sleep, poked), return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleep.cancel()
                poked.cancel()
            self._poked.clear()
            try:
                await self.refresh()
            except Exception:  # the poller must outlive any surprise
                log.exception("config poll failed")

    async def refresh(self) -> bool:
        """Ask the store for its latest version and serve it if it is newer; whether a new
        version went live."""
        async with self._lock:
            try:
                number = await self.store.latest_number()
                version = None
                if number > (self.served.version or 0) and self._untried(number):
                    version = await self.store.get_version(number)
            except StoreError as exc:
                if self.store_error is None:
                    log.warning("control store unavailable, still serving what we have: %s", exc)
                self.store_error = str(exc)
                return False
            if self.store_error is not None:
                log.info("control store %s is reachable again", self.store.url)
                self.store_error = None
            current = self.served.version or 0
            if 0 < number < current and number != self._behind_warned:
                self._behind_warned = number
                log.warning(
                    "the store's latest version %d is older than the served version %d "
                    "(was the store reset?); still serving %d",
                    number,
                    current,
                    current,
                )
            if version is None:
                return False
            return await self._adopt(version)

    def _untried(self, number: int) -> bool:
        return self.rejected is None or self.rejected[0] != number

    async def _adopt(self, version: ConfigVersion) -> bool:
        """Build and serve ``version`` (the caller holds the lock)."""
        gateway = self._gateway
        if gateway is None or version.number <= (self.served.version or 0):
            return False
        try:
            config = parse_config(version.yaml_text, source=f"version {version.number}")
        except ConfigError as error:
            self._reject(version.number, f"does not validate here:\n{error}")
            return False
        try:
            await gateway.reload(config)
        except Exception as error:  # a version that cannot be built must not take us down
            log.exception("config version %d failed to build", version.number)
            self._reject(version.number, f"failed to build: {error!r}")
            return False
        self.served = Served.of(version)
        self.loaded_at = time.time()
        self.rejected = None
        log.info("serving config version %d (%s)", version.number, version.message)
        try:
            await asyncio.to_thread(self.last_good.write, version)
        except OSError as exc:
            log.warning("could not write the last known good file %s: %s", self.last_good.path, exc)
        if self.after_reload is not None:
            self.after_reload(config)
        return True

    def _reject(self, number: int, why: str) -> None:
        self.rejected = (number, why)
        log.error("config version %d %s; still serving %s", number, why, self.served.version)

    # -- changes through the admin API -----------------------------------------------------

    async def apply(self, yaml_text: str, *, author: str, message: str) -> ApplyResult:
        """Validate and store ``yaml_text`` as the next version and serve it here at once
        (``ConfigError`` with nothing stored if invalid)."""
        async with self._lock:
            result = await self.versions.apply(
                yaml_text, author=author, message=message, source="<admin api>"
            )
            await self._adopt(result.version)
            return result

    async def rollback(
        self, to: int | None = None, *, author: str, message: str | None = None
    ) -> ApplyResult:
        """Apply version ``to`` (default: the one before the latest) again and serve it."""
        async with self._lock:
            result = await self.versions.rollback(to, author=author, message=message)
            await self._adopt(result.version)
            return result

    # -- staged rollout ----------------------------------------------------------------------

    async def stage(
        self, yaml_text: str, *, weight: float, author: str, message: str
    ) -> StagedConfig:
        """Serve ``yaml_text`` to ``weight`` percent of tenants on this gateway (``_stage``);
        staging the same text again only changes the weight. ``ConfigError`` if invalid,
        ``StageError`` if another config is staged."""
        gateway = self._require_gateway()
        config = parse_config(yaml_text, source="<staged>")
        digest = sha256_text(yaml_text)
        async with self._lock:
            current = gateway.staged
            if current is not None:
                if current.sha256 != digest:
                    raise StageError(
                        "another config is staged: promote or abort it first "
                        f"(staged sha256 {current.sha256[:12]})"
                    )
                current.set_weight(weight)
                log.info("staged config now at %g%% of tenants", weight)
                return current
            staged = await build_staged(
                gateway,
                config,
                text=yaml_text,
                sha256=digest,
                weight=weight,
                message=message,
                author=author,
            )
            gateway.staged = staged
            log.info("config staged for %g%% of tenants (%s)", weight, message)
            return staged

    async def promote(self, *, author: str) -> ApplyResult:
        """Apply the staged config as the next version, serve it to everyone, drop the stage."""
        gateway = self._require_gateway()
        async with self._lock:
            staged = gateway.staged
            if staged is None:
                raise StageError("nothing is staged")
            result = await self.versions.apply(
                staged.text, author=author, message=staged.message, source="<staged>"
            )
            await self._adopt(result.version)
            gateway.staged = None
        self._retire(staged)
        return result

    async def abort(self) -> StagedConfig:
        """Stop serving the staged config; its requests in flight finish on it."""
        gateway = self._require_gateway()
        async with self._lock:
            staged = gateway.staged
            if staged is None:
                raise StageError("nothing is staged")
            gateway.staged = None
        log.info("staged config aborted")
        self._retire(staged)
        return staged

    def _retire(self, staged: StagedConfig) -> None:
        assert self._gateway is not None
        task = asyncio.create_task(staged.retire(self._gateway.config.server.drain_timeout))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def _require_gateway(self) -> Gateway:
        if self._gateway is None:
            raise StageError("the control plane is not attached to a gateway")
        return self._gateway

    def to_json(self) -> dict[str, Any]:
        """``GET /api/config``: the served version and the store's health."""
        document = self.served.to_json()
        document.update(
            {
                "loaded_at": self.loaded_at,
                "store": self.store.url,
                "store_error": self.store_error,
                "poll_interval": self.poll_interval,
                "last_good": str(self.last_good.path),
                "rejected": None
                if self.rejected is None
                else {"version": self.rejected[0], "error": self.rejected[1]},
            }
        )
        return document
