"""Bad input an operator can throw at the admin surfaces (the admin API, ``headway top``,
``headway rollout``, ``headway config``, ``headway serve``): each gets a typed answer (an
OpenAI-format 4xx, a one-line CLI message and a non-zero exit), never a 500 or a traceback.

Real gateways on loopback, a real SQLite control store, real sockets for the "wrong port"
cases, the real CLI entry point.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_gateway_rollouts import MODEL, rollout_config
from test_gateway_rollouts import TOKEN as R_TOKEN

from conftest import BASE_CONFIG, Running
from headway.cli import main as cli_main
from headway.gateway._app import Gateway
from headway.gateway._control import ControlPlane, startup
from headway.rollout import LastKnownGood, load_active_config
from headway.store import open_control_store

TOKEN = "bad-input-admin-token-0123456789"
HUGE = "99999999999999999999999999"  # past BIGINT: overflowed the SQLite driver (500)
SUPERSCRIPT_TWO = "%C2%B2"  # '²': str.isdigit() says yes, int() raises (500)
UINT64_MAX = 2**64 - 1  # valid JSON for orjson, still past BIGINT


def _admin_sync(
    url: str, method: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def admin(
    running: Running,
    path: str,
    method: str = "GET",
    body: Any = None,
    headers: dict[str, str] | None = None,
    token: str = TOKEN,
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    head = {"content-type": "application/json", **(headers or {})} if data else {}
    head["authorization"] = f"Bearer {token}"
    url = running.admin_url + path
    return await asyncio.to_thread(_admin_sync, url, method, data, head)


@pytest.fixture
async def from_store(tmp_path: Path) -> AsyncIterator[Running]:
    """A gateway serving version 1 of a real SQLite store (as ``headway serve --store``)."""
    data = {**BASE_CONFIG, "server": {**BASE_CONFIG["server"], "admin_token": TOKEN}}
    store = open_control_store(f"sqlite:///{tmp_path}/control.db")
    lkg = LastKnownGood(tmp_path / "lkg.yaml")
    begun = await startup(store, lkg, yaml.safe_dump(data), "seed.yaml")
    gateway = Gateway(begun.config)
    await gateway.start(api_port=0, admin_port=0)
    control = ControlPlane(store, lkg, begun.served, poll_interval=60)
    control.attach(gateway, poll=False)
    yield Running(gateway)
    await control.aclose()
    await gateway.stop(1.0)


async def cli(*argv: str) -> tuple[int, str, str]:
    """``headway ARGV`` in a thread; (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()

    def run() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                return cli_main(list(argv))
            except SystemExit as exc:  # argparse: exit 2 on bad usage
                return exc.code if isinstance(exc.code, int) else 2

    code = await asyncio.to_thread(run)
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code != 0
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    for needle in needles:
        assert needle in last, err


# -- the admin API -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status", "param"),
    [
        ("GET", f"/api/config/versions?limit={HUGE}", 400, "limit"),
        ("GET", f"/api/config/versions?limit={SUPERSCRIPT_TWO}", 400, "limit"),
        ("GET", f"/api/config/versions/{HUGE}", 404, None),
        ("GET", f"/api/config/diff?from={HUGE}&to=1", 400, "from"),
        ("GET", f"/api/config/diff?from=1&to={SUPERSCRIPT_TWO}", 400, "to"),
        ("POST", f"/api/config/rollback?version={HUGE}", 400, "version"),
        ("POST", f"/api/config/rollback?version={SUPERSCRIPT_TWO}", 400, "version"),
    ],
)
async def test_version_numbers_past_the_store_or_not_ascii_are_4xx_not_500(
    from_store: Running, method: str, path: str, status: int, param: str | None
) -> None:
    got, doc = await admin(from_store, path, method)
    assert got == status, doc
    assert doc["error"]["param"] == param
    assert doc["error"]["type"] == "invalid_request_error"
    # The largest number a store can hold is a plain "not found".
    got, doc = await admin(from_store, "/api/config/versions/9223372036854775807")
    assert (got, doc["error"]["code"]) == (404, "version_not_found")


@pytest.mark.parametrize("path", ["/api/config/rollback", "/api/config/stage"])
async def test_json_version_past_bigint_is_400(from_store: Running, path: str) -> None:
    body = {"version": UINT64_MAX, "weight": 10, "message": "m"}
    status, doc = await admin(from_store, path, "POST", body)
    assert status == 400, doc
    assert doc["error"]["param"] == "version"


@pytest.mark.parametrize("weight", [[1], {}, "ten"])
async def test_stage_weight_of_the_wrong_type_is_400_naming_weight(
    from_store: Running, weight: Any
) -> None:
    body = {"yaml": "version: 1\n", "weight": weight, "message": "m"}
    status, doc = await admin(from_store, "/api/config/stage", "POST", body)
    assert status == 400, doc
    assert doc["error"]["param"] == "weight"
    _, staged = await admin(from_store, "/api/config/stage")
    assert staged == {"staged": None}


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ({"yaml": "version: 1\n", "message": "   "}, None),
        (None, {"x-headway-message": "  "}),
    ],
)
async def test_a_blank_reason_is_no_reason_in_json_as_in_the_header(
    from_store: Running, body: Any, headers: dict[str, str] | None
) -> None:
    if body is None:  # a YAML body, the reason in the header
        status, doc = await asyncio.to_thread(
            _admin_sync,
            from_store.admin_url + "/api/config",
            "POST",
            b"version: 1\n",
            {**(headers or {}), "authorization": f"Bearer {TOKEN}"},
        )
    else:
        status, doc = await admin(from_store, "/api/config", "POST", body)
    assert status == 400, doc
    assert doc["error"]["param"] == "message"
    _, current = await admin(from_store, "/api/config")
    assert current["version"] == 1  # nothing applied


@pytest.mark.parametrize("step", [5, [1], None, "set_weight"])
async def test_a_rollout_step_that_is_no_mapping_is_400_naming_it(
    start_gateway: Callable[..., Any], step: Any
) -> None:
    running: Running = await start_gateway(rollout_config())
    body = {"steps": [{"set_weight": 5}, step]}
    status, doc = await admin(running, f"/api/rollouts/{MODEL}", "POST", body, token=R_TOKEN)
    assert status == 400, doc
    assert doc["error"]["code"] == "invalid_rollout_spec"
    assert [e["path"] for e in doc["error"]["errors"]] == ["steps[1]"]
    status, _ = await admin(running, f"/api/rollouts/{MODEL}", token=R_TOKEN)
    assert status == 404  # nothing started


@pytest.mark.parametrize(
    ("body", "path"),
    [
        # An interval near 0 judged in a busy loop: ~30k decisions and a 40 MB status in 2 s.
        ({"steps": [{"set_weight": 5}], "analysis": {"interval": 1e-9}}, "analysis.interval"),
        ({"steps": [{"analysis": {"interval": 0.001}}]}, "steps[0].analysis.interval"),
        ({"steps": [{"set_weight": 1}] * 101}, "steps"),
    ],
)
async def test_rollout_specs_that_would_spin_or_bloat_are_400(
    start_gateway: Callable[..., Any], body: dict[str, Any], path: str
) -> None:
    running: Running = await start_gateway(rollout_config())
    status, doc = await admin(running, f"/api/rollouts/{MODEL}", "POST", body, token=R_TOKEN)
    assert status == 400, doc
    assert [e["path"] for e in doc["error"]["errors"]] == [path]
    # The bounds themselves are accepted.
    edge = {"steps": [{"set_weight": 1}] * 99 + [{"pause": {}}], "analysis": {"interval": 1}}
    status, doc = await admin(running, f"/api/rollouts/{MODEL}", "POST", edge, token=R_TOKEN)
    assert status == 201, doc


# -- CLIs against the wrong thing ------------------------------------------------------------------


@contextlib.contextmanager
def fake_port(answer: bytes) -> Iterator[str]:
    """A loopback port that answers every connection with ``answer`` and hangs up."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    conn.recv(65536)
                    conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        server.close()


def _http(body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: "
        + content_type
        + b"\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\nconnection: close\r\n\r\n"
        + body
    )


COMMANDS = [["top", "--once"], ["rollout", "status", MODEL], ["rollout", "pause", MODEL]]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("answer", "needle"),
    [
        (_http(b'{"a": 1}'), "not like the Headway admin API"),
        (_http(b"[]"), "not like the Headway admin API"),
        (_http(b"<html>", b"text/html"), "did not answer JSON"),
        (b"SSH-2.0-OpenSSH_9.6\r\n", "gave no valid HTTP answer"),
    ],
)
async def test_cli_pointed_at_a_port_that_is_not_the_admin_api_says_so(
    command: list[str], answer: bytes, needle: str
) -> None:
    with fake_port(answer) as url:
        code, _, err = await cli(*command, "--url", url, "--token", TOKEN)
    assert code == 1
    assert_one_line_error(code, err, needle, "admin port")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("url", ["garbage", "http://[::1", "127.0.0.1:8081"])
async def test_cli_with_a_malformed_url_says_so(command: list[str], url: str) -> None:
    code, _, err = await cli(*command, "--url", url)
    assert code == 1
    assert_one_line_error(code, err, "bad admin URL")


@pytest.mark.parametrize(
    "argv",
    [
        ["config", "rollback", HUGE],
        ["config", "show", HUGE],
        ["config", "show", "²"],
        ["config", "history", "--limit", HUGE],
        ["config", "diff", "1", HUGE],
        ["config", "diff", "²", "1"],
    ],
)
async def test_config_cli_version_numbers_past_the_store_are_one_line_errors(
    tmp_path: Path, argv: list[str]
) -> None:
    where = ["--store", f"sqlite:///{tmp_path}/control.db", "--last-good", str(tmp_path / "lkg")]
    seed = tmp_path / "v1.yaml"
    seed.write_text("version: 1\n")
    code, _, err = await cli("config", "apply", str(seed), *where, "-m", "first")
    assert code == 0, err
    code, _, err = await cli(*argv, *where)
    assert_one_line_error(code, err)
    assert "Overflow" not in err


@pytest.mark.parametrize("poll", ["-1", "0", "nan", "inf", "soon"])
async def test_serve_refuses_a_poll_interval_that_is_not_positive_and_finite(
    poll: str,
) -> None:
    code, _, err = await cli("serve", "--store", "sqlite:///./never-opened.db", "--poll", poll)
    assert code == 2
    assert_one_line_error(code, err, "--poll", "positive number of seconds")


async def test_an_unwritable_last_good_file_is_logged_not_silent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_control_store(f"sqlite:///{tmp_path}/control.db")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    lkg = LastKnownGood(blocker / "lkg.yaml")  # its directory is a file: every write fails
    try:
        await startup(store, lkg, yaml.safe_dump(BASE_CONFIG), "seed.yaml")
        caplog.set_level(logging.WARNING, logger="headway.control")
        active = await load_active_config(store, lkg)
    finally:
        await store.aclose()
    assert active.source == "store"  # still served
    warnings = [r.getMessage() for r in caplog.records if r.name == "headway.control"]
    assert any("could not write the last known good file" in w for w in warnings), warnings
