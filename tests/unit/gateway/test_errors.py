"""The error mapping: every status, every header, and the official openai client's reading of
them over real loopback sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import orjson
import pytest

from headway.core import (
    CircuitOpen,
    DeadlineExceeded,
    HeadwayError,
    Overloaded,
    RateLimited,
    Rejected,
    UpstreamError,
    UpstreamTimeout,
)
from headway.gateway._errors import (
    AuthError,
    BadRequest,
    HttpError,
    ModelNotAllowed,
    ModelNotFound,
    PayloadTooLarge,
    UpstreamHttpError,
    error_response_for,
    http_error,
    upstream_error_passthrough,
)
from headway.http import HttpServer, Request, Response


def body_of(resp: Response) -> dict[str, object]:
    data = orjson.loads(resp.body)
    assert set(data) == {"error"}
    error = data["error"]
    assert set(error) == {"message", "type", "code", "param"}
    return error  # type: ignore[no-any-return]


def headers_of(resp: Response) -> dict[bytes, bytes]:
    return dict(resp.headers)


# -- the table -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "status", "type_", "code", "reason"),
    [
        (BadRequest("bad", param="model"), 400, "invalid_request_error", None, "bad_request"),
        (AuthError("no"), 401, "authentication_error", "invalid_api_key", "invalid_api_key"),
        (ModelNotAllowed("no"), 403, "permission_error", "model_not_allowed", "model_not_allowed"),
        (ModelNotFound("no"), 404, "invalid_request_error", "model_not_found", "model_not_found"),
        (
            PayloadTooLarge("big"),
            413,
            "invalid_request_error",
            "request_too_large",
            "body_too_large",
        ),
        (
            RateLimited(retry_after=2.5, reason="tenant_rpm"),
            429,
            "requests",
            "rate_limit_exceeded",
            "tenant_rpm",
        ),
        (
            RateLimited(retry_after=2.5, reason="tenant_tpm"),
            429,
            "tokens",
            "rate_limit_exceeded",
            "tenant_tpm",
        ),
        (Overloaded(retry_after=2.0, reason="shed"), 503, "server_error", "overloaded", "shed"),
        (CircuitOpen(retry_after=3.0), 503, "server_error", "circuit_open", "circuit_open"),
        (Rejected(retry_after=1.0), 503, "server_error", "overloaded", "rejected"),
        (DeadlineExceeded(), 504, "server_error", "deadline_exceeded", "deadline_exceeded"),
        (UpstreamTimeout(), 504, "server_error", "upstream_timeout", "upstream_timeout"),
        (UpstreamError(status=500), 502, "server_error", "bad_gateway", "upstream_error"),
        (UpstreamError(), 502, "server_error", "bad_gateway", "upstream_error"),
        (
            UpstreamError(status=400),
            400,
            "invalid_request_error",
            None,
            "upstream_error",
        ),
        (UpstreamError(status=401), 502, "server_error", "upstream_auth", "upstream_auth"),
        (UpstreamError(status=403), 502, "server_error", "upstream_auth", "upstream_auth"),
        (
            UpstreamError(status=429, retry_after=4.0),
            503,
            "server_error",
            "upstream_rate_limited",
            "upstream_rate_limited",
        ),
        (ValueError("secret internals"), 500, "server_error", "internal_error", "internal_error"),
        (HeadwayError("odd"), 500, "server_error", "internal_error", "internal_error"),
    ],
)
def test_status_type_code_and_reason(
    exc: BaseException, status: int, type_: str, code: str | None, reason: str
) -> None:
    err = http_error(exc)
    assert (err.status, err.type, err.code, err.reason) == (status, type_, code, reason)
    resp = error_response_for(exc)
    assert resp.status == status
    body = body_of(resp)
    assert (body["type"], body["code"], body["message"]) == (type_, code, err.message)
    assert headers_of(resp)[b"x-headway-reason"] == reason.encode()


def test_bad_request_carries_param_and_message() -> None:
    resp = error_response_for(BadRequest("'stream' must be a boolean", param="stream"))
    assert body_of(resp) == {
        "message": "'stream' must be a boolean",
        "type": "invalid_request_error",
        "code": None,
        "param": "stream",
    }
    assert b"retry-after" not in headers_of(resp)


def test_http_error_is_a_named_tuple_with_five_leading_fields() -> None:
    status, type_, code, message, retry_after, *_ = http_error(
        Overloaded(retry_after=2.0, reason="shed")
    )
    assert (status, type_, code, message, retry_after) == (
        503,
        "server_error",
        "overloaded",
        "shed: server overloaded, retry after 2s",
        2.0,
    )
    assert isinstance(http_error(DeadlineExceeded()), HttpError)


# -- Retry-After -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "seconds", "millis"),
    [
        (2.0, b"2", b"2000"),
        (2.0001, b"3", b"2001"),
        (0.25, b"1", b"250"),
        (0.0004, b"1", b"1"),
        (59.5, b"60", b"59500"),
    ],
)
def test_retry_after_is_ceiled_whole_seconds_and_exact_millis(
    retry_after: float, seconds: bytes, millis: bytes
) -> None:
    for exc in (
        RateLimited(retry_after=retry_after, reason="tenant_rpm"),
        Overloaded(retry_after=retry_after),
        CircuitOpen(retry_after=retry_after),
    ):
        headers = headers_of(error_response_for(exc))
        assert headers[b"retry-after"] == seconds
        assert headers[b"retry-after-ms"] == millis
        assert b"x-should-retry" not in headers


def test_unknown_retry_after_defaults_to_one_second_on_429_and_503() -> None:
    for exc in (RateLimited(retry_after=None), Overloaded(retry_after=None)):
        headers = headers_of(error_response_for(exc))
        assert (headers[b"retry-after"], headers[b"retry-after-ms"]) == (b"1", b"1000")


def test_message_names_the_reason_and_the_wait() -> None:
    assert (
        http_error(Overloaded(retry_after=1.2, reason="shed")).message
        == "shed: server overloaded, retry after 2s"
    )
    assert (
        http_error(RateLimited(retry_after=30.0, reason="tenant_tpm")).message
        == "tenant_tpm: tokens-per-minute quota exceeded for this API key, retry after 30s"
    )
    # An unknown reason still says what class of refusal it was.
    assert (
        http_error(Overloaded(retry_after=1.0, reason="brownout")).message
        == "brownout: server overloaded, retry after 1s"
    )


def test_guard_internals_never_reach_the_client() -> None:
    exc = Overloaded("limiter 'pool-a/10.0.0.7:8000' full", retry_after=1.0, reason="queue_full")
    assert b"10.0.0.7" not in error_response_for(exc).body
    upstream = UpstreamError("connect to 10.0.0.7:8000 refused", status=None)
    assert b"10.0.0.7" not in error_response_for(upstream).body


def test_never_admissible_says_do_not_retry_and_omits_retry_after() -> None:
    for exc in (
        RateLimited(retry_after=None, reason="tenant_tpm_too_large"),
        RateLimited(retry_after=None, reason="cost_exceeds_burst"),
        RateLimited(retry_after=float("inf"), reason="tenant_tpm"),
    ):
        resp = error_response_for(exc)
        headers = headers_of(resp)
        assert resp.status == 429
        assert headers[b"x-should-retry"] == b"false"
        assert b"retry-after" not in headers
        assert b"retry-after-ms" not in headers
        assert "retry after" not in str(body_of(resp)["message"])


def test_no_retry_after_on_non_rejections() -> None:
    for exc in (AuthError(), ModelNotFound(), DeadlineExceeded(), UpstreamError(status=502)):
        headers = headers_of(error_response_for(exc))
        assert b"retry-after" not in headers
        assert b"retry-after-ms" not in headers


def test_401_names_the_scheme() -> None:
    assert headers_of(error_response_for(AuthError()))[b"www-authenticate"] == b"Bearer"


def test_unexpected_error_reveals_nothing() -> None:
    resp = error_response_for(RuntimeError("password=hunter2 at /srv/app.py line 3"))
    assert resp.status == 500
    assert b"hunter2" not in resp.body
    assert b"Traceback" not in resp.body
    assert body_of(resp)["message"] == "internal error in the gateway"
    assert headers_of(resp)[b"x-headway-reason"] == b"internal_error"


def test_unsafe_reason_is_not_put_in_a_header() -> None:
    exc = Overloaded(retry_after=1.0, reason="evil\r\nset-cookie: x=1")
    assert headers_of(error_response_for(exc))[b"x-headway-reason"] == b"error"


# -- upstream pass-through ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "passes"),
    [
        *[(status, True) for status in (400, 404, 408, 413, 422, 499)],
        *[(status, False) for status in (401, 403, 407, 429, 500, 503)],
    ],
)
def test_upstream_passthrough_rule(status: int, passes: bool) -> None:
    assert upstream_error_passthrough(UpstreamError(status=status)) is passes
    assert upstream_error_passthrough(UpstreamError(status=None)) is False


def test_upstream_4xx_body_is_relayed_verbatim() -> None:
    upstream_body = (
        b'{"error":{"message":"max_tokens is too large","type":"invalid_request_error"}}'
    )
    resp = error_response_for(UpstreamHttpError(status=400, body=upstream_body))
    assert (resp.status, resp.body) == (400, upstream_body)
    # A 5xx body is not relayed: the client gets our 502.
    resp = error_response_for(UpstreamHttpError(status=500, body=b"stack trace here"))
    assert resp.status == 502
    assert b"stack trace" not in resp.body


def test_upstream_429_becomes_503_with_its_retry_after() -> None:
    resp = error_response_for(UpstreamError(status=429, retry_after=4.0))
    assert resp.status == 503
    assert headers_of(resp)[b"retry-after"] == b"4"


# -- the official client, over real sockets ----------------------------------------------------


@pytest.fixture
async def answer() -> AsyncIterator[list[BaseException]]:
    """A server answering every request with ``error_response_for(slot[0])``."""
    slot: list[BaseException] = [RuntimeError()]

    async def handler(request: Request) -> Response:
        return error_response_for(slot[0])

    server = HttpServer(handler)
    port = await server.start("127.0.0.1", 0)
    slot.append(_Port(port))
    yield slot
    await server.stop(grace=0.5)


class _Port(Exception):
    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.port = port


def _client(slot: list[BaseException], max_retries: int = 0) -> openai.AsyncOpenAI:
    port = slot[1]
    assert isinstance(port, _Port)
    return openai.AsyncOpenAI(
        base_url=f"http://127.0.0.1:{port.port}/v1",
        api_key="sk-test",
        max_retries=max_retries,
        timeout=5.0,
    )


@pytest.mark.parametrize(
    ("exc", "cls", "status"),
    [
        (
            BadRequest("'model' must be a non-empty string", param="model"),
            openai.BadRequestError,
            400,
        ),
        (AuthError("invalid API key"), openai.AuthenticationError, 401),
        (ModelNotAllowed("no"), openai.PermissionDeniedError, 403),
        (ModelNotFound("unknown model 'x'"), openai.NotFoundError, 404),
        (PayloadTooLarge("too big"), openai.APIStatusError, 413),
        (RateLimited(retry_after=2.0, reason="tenant_rpm"), openai.RateLimitError, 429),
        (Overloaded(retry_after=2.0, reason="shed"), openai.InternalServerError, 503),
        (DeadlineExceeded(), openai.InternalServerError, 504),
        (UpstreamError(status=500), openai.InternalServerError, 502),
    ],
)
async def test_official_client_raises_the_right_class(
    answer: list[BaseException], exc: BaseException, cls: type[openai.APIStatusError], status: int
) -> None:
    answer[0] = exc
    async with _client(answer) as client:
        with pytest.raises(cls) as info:
            await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
    error = info.value
    assert type(error) is cls
    assert error.status_code == status
    expected = http_error(exc)
    assert (error.type, error.code, error.param) == (expected.type, expected.code, expected.param)
    assert error.message.endswith(expected.message)


async def test_official_client_reads_retry_after_ms(answer: list[BaseException]) -> None:
    answer[0] = RateLimited(retry_after=0.2505, reason="tenant_rpm")
    async with _client(answer) as client:
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
        headers = info.value.response.headers
        # The client prefers retry-after-ms (exact) over Retry-After (whole seconds).
        assert client._parse_retry_after_header(headers) == 0.251
        assert client._should_retry(info.value.response) is True


async def test_official_client_does_not_retry_never_admissible(
    answer: list[BaseException],
) -> None:
    answer[0] = RateLimited(retry_after=None, reason="tenant_tpm_too_large")
    async with _client(answer) as client:
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
        assert client._should_retry(info.value.response) is False
