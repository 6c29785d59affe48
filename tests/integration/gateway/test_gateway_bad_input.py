"""Hostile and broken clients: every bad input gets its documented answer, and the gateway keeps
serving everybody else (each test ends by checking that a normal request still succeeds).

Malformed HTTP goes over raw sockets, so the bytes on the wire are exactly the test's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from conftest import BASE_CONFIG, Running, make_config

MAX_BODY = 4096
HEADER_TIMEOUT = 0.5
# A slow sim (50 tokens/s) for streams that must still be running when the test acts.
SLOW_SIM = {"name": "s1", "models": ["slow"], "ttft": 0.01, "tokens_per_second": 50, "seed": 4}


def _config() -> Any:
    return make_config(
        server={
            **BASE_CONFIG["server"],
            "limits": {"max_body_bytes": MAX_BODY, "header_timeout": HEADER_TIMEOUT},
        },
        sims=[*BASE_CONFIG["sims"], SLOW_SIM],
        pools=[*BASE_CONFIG["pools"], {"name": "slow", "endpoints": [{"url": "sim://s1"}]}],
        models=[
            *BASE_CONFIG["models"],
            {"name": "sim-slow", "pool": "slow", "upstream_model": "slow"},
        ],
    )


@pytest.fixture
async def gw(start_gateway: Callable[..., Any]) -> Running:
    running: Running = await start_gateway(_config())
    return running


# -- raw HTTP ------------------------------------------------------------------------------------


class Reply:
    def __init__(self, status: int, head: list[str], headers: dict[str, str], body: bytes):
        self.status = status
        self.head = head  # header lines as received, status line excluded
        self.headers = headers
        self.body = body

    def error(self) -> dict[str, Any]:
        payload = orjson.loads(self.body)
        assert isinstance(payload, dict)
        error = payload["error"]
        assert isinstance(error, dict)
        return error


async def read_reply(reader: asyncio.StreamReader) -> Reply:
    """One HTTP/1.1 response (content-length, chunked, or up to EOF)."""
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
    lines = raw.decode("latin-1").split("\r\n")[:-2]
    status = int(lines[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5.0)
    elif headers.get("transfer-encoding") == "chunked":
        parts = []
        while True:
            size = int(await asyncio.wait_for(reader.readuntil(b"\r\n"), 5.0), 16)
            chunk = await asyncio.wait_for(reader.readexactly(size + 2), 5.0)
            if size == 0:
                break
            parts.append(chunk[:-2])
        body = b"".join(parts)
    else:
        body = await asyncio.wait_for(reader.read(), 5.0)
    return Reply(status, lines[1:], headers, body)


async def exchange(port: int, data: bytes) -> tuple[Reply, bytes]:
    """Send ``data`` on a new connection; the first response and whatever follows until EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        reply = await read_reply(reader)
        rest = await asyncio.wait_for(reader.read(), 5.0)
        return reply, rest
    finally:
        writer.close()


def post(
    body: bytes,
    *,
    path: str = "/v1/chat/completions",
    key: str | None = "sk-pro",
    extra: bytes = b"",
    close: bool = True,
) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n".encode()
    if key is not None:
        head += f"authorization: Bearer {key}\r\n".encode()
    if close:
        head += b"connection: close\r\n"
    return head + extra + b"content-length: %d\r\n\r\n" % len(body) + body


def chat(model: str = "sim-small", max_tokens: int = 3, **more: Any) -> bytes:
    messages = [{"role": "user", "content": "hi"}]
    return orjson.dumps({"model": model, "messages": messages, "max_tokens": max_tokens, **more})


async def assert_serving(gw: Running) -> None:
    """A normal request on a new connection still gets a normal answer."""
    reply, _ = await exchange(gw.gateway.api_port, post(chat()))
    assert reply.status == 200, reply.body
    assert orjson.loads(reply.body)["choices"][0]["finish_reason"] == "length"


# -- bodies --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"model": "sim-small", "messages": [', None),  # malformed JSON
        (b"\xff\xfe not even utf-8", None),
        (b'["sim-small", "hi"]', None),  # JSON, but not an object
        (b"", None),
        (orjson.dumps({"model": 5, "messages": [{"role": "user", "content": "x"}]}), "model"),
        (chat(stream="yes"), "stream"),
        (chat(max_tokens=-1), "max_tokens"),
        (orjson.dumps({"model": "sim-small"}), "messages"),
    ],
    ids=[
        "malformed-json",
        "not-utf8",
        "not-an-object",
        "empty",
        "model-int",
        "stream-str",
        "max-tokens-negative",
        "missing-messages",
    ],
)
async def test_bad_body_is_400_naming_the_param(
    gw: Running, body: bytes, param: str | None
) -> None:
    reply, _ = await exchange(gw.gateway.api_port, post(body))
    assert reply.status == 400
    error = reply.error()
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    await assert_serving(gw)


async def test_declared_body_over_the_limit_is_413_before_it_is_sent(gw: Running) -> None:
    head = post(b"", close=False).replace(b"content-length: 0", b"content-length: 100000")
    reply, rest = await exchange(gw.gateway.api_port, head)
    assert reply.status == 413
    assert reply.headers["connection"] == "close"
    assert rest == b""
    await assert_serving(gw)


async def test_chunked_body_over_the_limit_is_413(gw: Running) -> None:
    big = b'{"model": "sim-small", "messages": [], "pad": "' + b"x" * MAX_BODY + b'"}'
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer sk-pro\r\n"
        b"transfer-encoding: chunked\r\n\r\n%x\r\n%b\r\n0\r\n\r\n" % (len(big), big)
    )
    reply, _ = await exchange(gw.gateway.api_port, request)
    assert reply.status == 413
    assert reply.error()["type"] == "invalid_request_error"
    await assert_serving(gw)


async def test_body_at_the_limit_is_accepted(gw: Running) -> None:
    body = chat()
    padded = body[:-1] + b', "user": "' + b"u" * (MAX_BODY - len(body) - 12) + b'"}'
    assert len(padded) == MAX_BODY
    reply, _ = await exchange(gw.gateway.api_port, post(padded))
    assert reply.status == 200, reply.body


async def test_expect_100_continue_is_answered_before_the_body(gw: Running) -> None:
    body = chat()
    request = post(body, extra=b"expect: 100-continue\r\n")
    head, payload = request[: -len(body)], request[-len(body) :]
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.gateway.api_port)
    try:
        writer.write(head)  # the client holds the body back until told to send it
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 0.5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(payload)
        reply = await read_reply(reader)
    finally:
        writer.close()
    assert reply.status == 200, reply.body
    # A body declared over the limit is refused at once instead, never invited.
    too_big = head.replace(b"content-length: %d" % len(body), b"content-length: 100000")
    reply, rest = await exchange(gw.gateway.api_port, too_big)
    assert reply.status == 413
    assert rest == b""


# -- paths, methods, keys ------------------------------------------------------------------------


async def test_unknown_path_is_404_and_wrong_method_is_405(gw: Running) -> None:
    port = gw.gateway.api_port
    reply, _ = await exchange(port, post(chat(), path="/v1/nope"))
    assert reply.status == 404
    get = b"GET /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n"
    reply, _ = await exchange(port, get)
    assert reply.status == 405
    assert reply.error()["type"] == "invalid_request_error"
    await assert_serving(gw)


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        b"authorization: Bearer sk-wrong\r\n",
        b"authorization: Bearer\r\n",
        b"authorization: Basic c2stcHJvOg==\r\n",
        b"authorization: Bearer sk-pro sk-pro\r\n",
        "authorization: Bearer sk-pr\u00f6\r\n".encode(),
        b"authorization: Bearer " + b"k" * 5000 + b"\r\n",
    ],
    ids=["missing", "wrong-key", "empty", "basic", "two-keys", "non-ascii", "huge"],
)
async def test_missing_or_garbage_key_is_401(gw: Running, authorization: bytes | None) -> None:
    reply, _ = await exchange(
        gw.gateway.api_port, post(chat(), key=None, extra=authorization or b"")
    )
    assert reply.status == 401
    assert reply.error()["type"] == "authentication_error"
    assert reply.error()["code"] == "invalid_api_key"
    assert "sk-pro" not in reply.body.decode()  # a key is never echoed back
    await assert_serving(gw)


# -- header injection ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        b"x-note: a\rx-evil: 1\r\n",  # bare CR inside a value
        b"x-note: a\nx-evil: 1\r\n",  # bare LF inside a value
        b"x-note: a\x00b\r\n",  # NUL inside a value
        b"x-note: a\r\n x-evil: 1\r\n",  # obsolete line folding
        b"x-e vil: 1\r\n",  # space inside a name
    ],
    ids=["bare-cr", "bare-lf", "nul", "obs-fold", "space-in-name"],
)
async def test_control_characters_in_headers_are_400_without_splitting(
    gw: Running, header: bytes
) -> None:
    reply, rest = await exchange(gw.gateway.api_port, post(chat(), extra=header))
    assert reply.status == 400, reply.body
    assert not any(line.lower().startswith("x-evil") for line in reply.head)
    assert b"HTTP/1." not in reply.body + rest  # exactly one response on the wire
    await assert_serving(gw)


async def test_model_name_with_crlf_never_becomes_a_header(gw: Running) -> None:
    body = orjson.dumps(
        {"model": "sim-small\r\nx-evil: 1", "messages": [{"role": "user", "content": "hi"}]}
    )
    reply, rest = await exchange(gw.gateway.api_port, post(body))
    assert reply.status == 404
    assert reply.error()["code"] == "model_not_found"
    assert not any(line.lower().startswith("x-evil") for line in reply.head)
    assert b"\r\nx-evil" not in reply.body + rest
    await assert_serving(gw)


# -- slow, vanishing and pipelining clients ------------------------------------------------------


async def test_slowloris_gets_408_and_others_are_served_meanwhile(gw: Running) -> None:
    port = gw.gateway.api_port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = post(chat())
    started = time.monotonic()

    async def trickle() -> None:
        for byte in request:  # one byte every 0.1 s: the headers would take minutes
            writer.write(bytes([byte]))
            await asyncio.sleep(0.1)

    dripping = asyncio.create_task(trickle())
    try:
        # Others are served while the slow client holds its connection.
        for _ in range(3):
            await assert_serving(gw)
        assert not dripping.done()
        try:
            answer = await asyncio.wait_for(reader.read(), HEADER_TIMEOUT + 2.0)
        except ConnectionResetError:  # a byte written after the close can reset it
            answer = b""
        elapsed = time.monotonic() - started
    finally:
        dripping.cancel()
        writer.close()
    assert HEADER_TIMEOUT - 0.05 <= elapsed < HEADER_TIMEOUT + 2.0
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer
    assert gw.gateway._api.snapshot()["timeouts"] >= 1
    await assert_serving(gw)


async def test_client_gone_mid_stream_frees_the_upstream(gw: Running) -> None:
    sim = gw.sim("s1")
    runtime = gw.gateway.runtime
    assert runtime is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.gateway.api_port)
    writer.write(post(chat("sim-slow", max_tokens=500, stream=True)))  # 10 s at 50 tokens/s
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
    assert head.startswith(b"HTTP/1.1 200 ")
    first = await asyncio.wait_for(reader.readuntil(b"\n\n"), 5.0)
    assert b"data: " in first
    assert sim.app.capacity.active == 1
    assert runtime.inflight == 1
    writer.close()
    await writer.wait_closed()
    for _ in range(150):  # up to 3 s
        if not (sim.app.capacity.active or runtime.inflight):
            break
        await asyncio.sleep(0.02)
    assert sim.app.capacity.active == 0
    assert runtime.inflight == 0
    assert runtime.admission.snapshot()["inflight"] == 0
    await assert_serving(gw)


async def test_pipelined_requests_are_answered_in_order(gw: Running) -> None:
    requests = (
        post(chat("sim-slow", max_tokens=10), close=False)  # ~0.2 s: the others wait behind it
        + b"GET /healthz HTTP/1.1\r\nhost: gw\r\n\r\n"
        + post(chat("sim-small", max_tokens=2), close=False)
        + b"GET /v1/models HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer sk-free\r\n"
        b"connection: close\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.gateway.api_port)
    try:
        writer.write(requests)
        replies = [await read_reply(reader) for _ in range(4)]
        rest = await asyncio.wait_for(reader.read(), 5.0)
    finally:
        writer.close()
    assert [r.status for r in replies] == [200, 200, 200, 200]
    first, health, second, models = (orjson.loads(r.body) for r in replies)
    assert first["model"] == "slow"  # the upstream's name for it
    assert first["usage"]["completion_tokens"] == 10
    assert health == {"status": "ok"}
    assert second["model"] == "small"
    assert second["usage"]["completion_tokens"] == 2
    assert [m["id"] for m in models["data"]] == ["sim-small"]
    assert rest == b""
    await assert_serving(gw)
