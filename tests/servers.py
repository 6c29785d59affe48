"""Private server processes for integration tests, started from the installed binaries on free
loopback ports so tests never touch (or depend on the state of) the machine's shared services."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


def require_binary(name: str) -> str:
    """Path of an installed server binary a test needs.

    Locally a missing binary skips the test with a reason naming it; under CI (``CI`` set)
    nothing may be skipped, so the test fails instead.
    """
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (needed by this test)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must install it (.ci/run)")
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def private_redis() -> Iterator[int]:
    """A throwaway redis-server (no persistence); yields its port, stops it afterwards."""
    binary = require_binary("redis-server")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10.0
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail(f"redis-server did not answer PING on port {port}")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


#: The machine's PostgreSQL (trust auth; database ``test``), for control-plane store tests.
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def require_postgres(url: str = POSTGRES_URL) -> str:
    """``url`` if PostgreSQL answers there; otherwise skip with the reason printed (locally) or
    fail (under CI, where nothing may be skipped), like :func:`require_binary`."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        message = f"PostgreSQL at {url} is unreachable ({exc})"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must provide it")
        print(f"skipping: {message}")
        pytest.skip(message)
    return url
