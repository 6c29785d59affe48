"""Running the gateway as a process: event loop, workers, signals, hot reload.

- ``serve_main(argv)`` is ``headway serve [CONFIG]``; with no CONFIG it runs the embedded demo.
- uvloop when available (measured faster for this workload; see bench/http_choice.py).
- ``server.workers > 1`` forks that many processes, each binding the API port with
  SO_REUSEPORT so the kernel spreads connections; the parent forwards signals and replaces a
  worker that dies (with a crash-loop limit).
- SIGTERM/SIGINT: stop accepting, let in-flight requests and streams finish for up to
  ``server.drain_timeout`` seconds, then exit 0.
- SIGHUP, or the config file changing on disk: load and validate the new config; if valid, swap
  it in atomically (requests in flight finish on the config they started with); if not, keep
  serving the old one and log every error.
- ``--store URL`` (or ``$HEADWAY_STORE``, or CONFIG's ``state.control_url``): serve config
  versions from the control store instead, falling back to the last known good file, and follow
  new versions by polling (SIGHUP polls at once); CONFIG then only seeds an empty store
  (``_control``).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import io
import logging
import math
import os
import select
import signal
import stat
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from headway.config import ConfigError, GatewayConfig, load_config
from headway.config._server import ADMIN_TOKEN_MIN_CHARS
from headway.rollout import NoActiveConfig
from headway.store import StoreError

from ._control import DEFAULT_LAST_GOOD, DEFAULT_POLL_INTERVAL, ControlSettings, Startup

log = logging.getLogger("headway.serve")

# The access log's write buffer on a regular file: one write(2) per ~50 lines instead of one
# per ~13 at PIPE_BUF (our choice; nginx's access_log buffer= is commonly 16k-64k). Not more:
# a batch larger than the buffer (a busy worker's 10 ms, ~200 lines, ~60 KB) is written
# straight from the formatter's bytes, one write(2) a batch, rather than copied into the
# buffer first; a quiet worker's small batches still share a write.
ACCESS_LOG_BUFFER = 16 * 1024
# How often the config file's modification time is checked for hot reload.
WATCH_INTERVAL = 1.0
# After a reload, how long past the drain timeout to wait before re-freezing the heap: the old
# runtime's retirement (drain, then closing its pools, which waits up to 1 s) is over by then.
REFREEZE_MARGIN = 5.0
# Crash-loop guard for the worker supervisor: more worker deaths than this within the window and
# it gives up (OTP's supervisor default is 3 restarts in 5 s; a gateway worker takes longer to
# start, so a wider window).
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0


def _freeze_heap() -> None:
    """Move everything alive now (modules, config, runtime) out of the cyclic GC's reach.

    Profiling under load showed ~10% of the worker's CPU in the cyclic collector, mostly full
    (generation 2) collections re-walking the ~50k long-lived objects built at startup, which
    are never garbage. ``gc.freeze`` parks them in a permanent generation, so collections only
    walk what requests allocate. Objects are still freed by reference counting as usual; only
    cycles among frozen objects wait for the next :func:`gc.unfreeze` (see ``_reload_loop``).
    """
    gc.collect()
    gc.freeze()


def _poll_seconds(text: str) -> float:
    """A positive, finite number of seconds: 0 or less would poll the store in a busy loop,
    NaN or infinity never (``float`` alone accepts all of them)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return seconds


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="headway serve", description="Run the gateway.")
    parser.add_argument("config", nargs="?", help="config file (default: the embedded demo)")
    parser.add_argument("--workers", type=int, help="override server.workers")
    parser.add_argument("--no-watch", action="store_true", help="don't reload on file change")
    parser.add_argument(
        "--admin-token",
        default=os.environ.get("HEADWAY_ADMIN_TOKEN") or None,
        help="the admin API's bearer token, needed for its write actions (default: "
        "$HEADWAY_ADMIN_TOKEN; overrides server.admin_token)",
    )
    parser.add_argument(
        "--store",
        default=os.environ.get("HEADWAY_STORE") or None,
        help="serve config versions from this control store (sqlite:///PATH or "
        "postgresql://...; default: $HEADWAY_STORE, else CONFIG's state.control_url); "
        "CONFIG then only seeds an empty store",
    )
    parser.add_argument(
        "--last-good",
        default=os.environ.get("HEADWAY_LAST_GOOD") or DEFAULT_LAST_GOOD,
        help="with a store: the file served when the store is unreachable, rewritten after "
        "each version loads (default: $HEADWAY_LAST_GOOD or %(default)s)",
    )
    parser.add_argument(
        "--poll",
        type=_poll_seconds,
        default=DEFAULT_POLL_INTERVAL,
        help="with a store: seconds between checks for a new version (default: %(default)s)",
    )
    return parser.parse_args(list(argv))


def serve_main(argv: Sequence[str]) -> int:
    args = _parse(argv)
    logging.basicConfig(
        level=os.environ.get("HEADWAY_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    token = args.admin_token
    if token is not None and len(token) < ADMIN_TOKEN_MIN_CHARS:
        print(
            f"headway: --admin-token / $HEADWAY_ADMIN_TOKEN must be at least "
            f"{ADMIN_TOKEN_MIN_CHARS} characters (e.g. from 'openssl rand -hex 32')",
            file=sys.stderr,
        )
        return 1
    try:
        config = None if args.store else load_config(args.config)
        url = args.store or (config.state.control_url if config and args.config else None)
        start = None if url is None else _control_settings(args, url).preload()
    except ConfigError as error:
        print(f"headway: invalid config {error.source or '(embedded)'}:", file=sys.stderr)
        print(str(error), file=sys.stderr)
        return 1
    except OSError as error:
        print(f"headway: cannot read config: {error}", file=sys.stderr)
        return 1
    except (NoActiveConfig, StoreError) as error:
        print(f"headway: no config to serve: {error}", file=sys.stderr)
        return 1
    except ValueError as error:  # a store URL no backend understands
        print(f"headway: {error}", file=sys.stderr)
        return 1
    if start is not None:
        config = start.config
    assert config is not None
    workers = args.workers or config.server.workers
    if workers > 1:
        return _supervise(args, workers, start)
    path = None if start is not None else args.config
    return _run_worker(
        path,
        config,
        watch=not args.no_watch,
        reuse_port=False,
        start=start,
        admin_token=args.admin_token,
    )


def _control_settings(args: argparse.Namespace, url: str) -> ControlSettings:
    return ControlSettings(url, args.last_good, args.poll, args.config)


def _run_worker(
    path: str | None,
    config: GatewayConfig,
    *,
    watch: bool,
    reuse_port: bool,
    start: Startup | None = None,
    admin_token: str | None = None,
) -> int:
    main = _worker(
        path, config, watch=watch, reuse_port=reuse_port, start=start, admin_token=admin_token
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return asyncio.run(main)
    return uvloop.run(main)


async def _worker(
    path: str | None,
    config: GatewayConfig,
    *,
    watch: bool,
    reuse_port: bool,
    start: Startup | None = None,
    admin_token: str | None = None,
) -> int:
    """Serve ``config``; with ``start`` (store mode), follow the store it came from instead of
    the file at ``path``."""
    from ._app import ACCESS_LOGGER, Gateway

    # Access-log lines go to stderr through their own write buffer (flushed every second by the
    # gateway) rather than through logging, which costs ~5x more per line, or sys.stderr.buffer,
    # which is unbuffered (a syscall per line). HEADWAY_LOG_LEVEL above INFO silences them.
    # Each flush is one write(2) of whole lines, so workers sharing stderr never interleave
    # inside a line: on a pipe or socket the buffer is PIPE_BUF (larger writes to a pipe are
    # not atomic); on a file, where one write(2) is never split, it is ACCESS_LOG_BUFFER.
    sink: io.BufferedWriter | None = None
    if logging.getLogger(ACCESS_LOGGER).isEnabledFor(logging.INFO):
        fd = sys.stderr.fileno()
        raw = io.FileIO(fd, "wb", closefd=False)
        size = ACCESS_LOG_BUFFER if stat.S_ISREG(os.fstat(fd).st_mode) else select.PIPE_BUF
        sink = io.BufferedWriter(raw, buffer_size=size)
    # Rollout state lives in the store the config versions come from, when there is one.
    store_url = start.settings.url if start is not None and start.settings is not None else None
    gateway = Gateway(
        config,
        reuse_port=reuse_port,
        access_log_sink=sink,
        config_path=path,
        control_url=store_url,
        admin_token=admin_token,
    )
    try:
        await gateway.start()
    except OSError as error:  # typically the port is taken: say so, without a traceback
        print(f"headway: cannot listen: {error}", file=sys.stderr, flush=True)
        await gateway.stop(0)
        return 1
    _freeze_heap()
    api, admin = config.server.listen, config.server.admin_listen
    log.info("headway gateway listening on http://%s/v1 (admin http://%s)", api, admin)
    print(f"headway: serving on http://{api}/v1 (admin http://{admin})", flush=True)
    stop = asyncio.Event()
    reload_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    refreezer = _Refreezer()
    # A reload through the admin API thaws and re-freezes the heap like SIGHUP's.
    gateway.admin.after_reload = lambda: refreezer.reloaded(gateway.config)
    control = None
    if start is not None:  # config versions: poll the store; SIGHUP polls at once
        # One connection per worker: the plane borrows the gateway's (rollouts use it too).
        control = start.plane(store=gateway.control_store)
        control.after_reload = refreezer.reloaded
        control.attach(gateway)
        loop.add_signal_handler(signal.SIGHUP, control.poke)
        watcher = reloader = None
    else:
        loop.add_signal_handler(signal.SIGHUP, reload_requested.set)
        watcher = asyncio.create_task(_watch(path, reload_requested)) if watch and path else None
        reloader = asyncio.create_task(_reload_loop(gateway, path, reload_requested, refreezer))
    await stop.wait()
    log.info("draining for up to %.0fs", gateway.config.server.drain_timeout)
    for task in (watcher, reloader):
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if control is not None:
        await control.aclose()
    await gateway.stop(gateway.config.server.drain_timeout)
    log.info("stopped")
    return 0


async def _watch(path: str, reload_requested: asyncio.Event) -> None:
    file = Path(path)
    last = _mtime(file)
    while True:
        await asyncio.sleep(WATCH_INTERVAL)
        now = _mtime(file)
        if now != last:
            last = now
            reload_requested.set()


def _mtime(file: Path) -> float:
    try:
        return file.stat().st_mtime
    except OSError:
        return -1.0


class _Refreezer:
    """After a reload: thaw the heap, then freeze it again once the old runtime is retired."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    def reloaded(self, config: GatewayConfig) -> None:
        # The retiring runtime was frozen at startup (or at the last re-freeze): thaw the heap
        # so its reference cycles can be collected once it is retired, then freeze again after
        # the retirement (a newer reload restarts the wait).
        gc.unfreeze()
        self.cancel()
        delay = config.server.drain_timeout + REFREEZE_MARGIN
        self._task = asyncio.create_task(_refreeze_after(delay))

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def _reload_loop(
    gateway: object, path: str | None, reload_requested: asyncio.Event, refreezer: _Refreezer
) -> None:
    from ._app import Gateway

    assert isinstance(gateway, Gateway)
    try:
        while True:
            await reload_requested.wait()
            reload_requested.clear()
            try:
                config = load_config(path)
            except (ConfigError, OSError) as error:
                log.error("reload rejected, still serving the previous config:\n%s", error)
                continue
            try:
                await gateway.reload(config)
            except Exception:  # a bad reload must never take the data path down
                log.exception("reload failed, still serving the previous config")
            else:
                log.info("config reloaded")
                refreezer.reloaded(config)
    finally:
        refreezer.cancel()


async def _refreeze_after(delay: float) -> None:
    await asyncio.sleep(delay)
    _freeze_heap()


def _supervise(args: argparse.Namespace, workers: int, start: Startup | None = None) -> int:
    """Fork ``workers`` processes sharing the port (SO_REUSEPORT), forward signals to them, and
    replace a worker that dies on its own (a crash, an OOM kill) so capacity comes back.

    A worker that exits while the supervisor is not stopping is restarted with the config file
    as it is now (the last good one if it no longer loads). More than ``MAX_RESTARTS`` deaths
    within ``RESTART_WINDOW`` seconds is a crash loop: the supervisor stops the rest and exits 1
    rather than fork forever (the restart intensity rule of Erlang/OTP supervisors).
    With ``start`` (store mode) each worker follows the store itself, and a replacement starts
    from the store's latest version (or the last known good file).
    """
    config = load_config(args.config) if start is None else start.config
    path = args.config if start is None else None
    children: set[int] = set()
    stopping = False

    def spawn(current: GatewayConfig) -> None:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            code = _run_worker(
                path,
                current,
                watch=not args.no_watch,
                reuse_port=True,
                start=start,
                admin_token=args.admin_token,
            )
            os._exit(code)
        children.add(pid)

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum != signal.SIGHUP:
            stopping = True
        for child in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    for _ in range(workers):
        spawn(config)
    deaths: collections.deque[float] = collections.deque()
    code = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:  # pragma: no cover - every child already reaped
            break
        children.discard(pid)
        exit_code = os.waitstatus_to_exitcode(status)
        if stopping:
            code = code or exit_code
            continue
        now = time.monotonic()
        deaths.append(now)
        while deaths and now - deaths[0] > RESTART_WINDOW:
            deaths.popleft()
        if len(deaths) > MAX_RESTARTS:
            log.error("workers keep dying (%d in %.0fs): stopping", len(deaths), RESTART_WINDOW)
            forward(signal.SIGTERM, None)
            code = 1
            continue
        log.error("worker %d exited unexpectedly (code %d): starting a new one", pid, exit_code)
        with contextlib.suppress(ConfigError, OSError, NoActiveConfig, StoreError):
            if start is not None and start.settings is not None:
                start = start.settings.preload()
                config = start.config
            else:
                config = load_config(args.config)
        spawn(config)
    return code
