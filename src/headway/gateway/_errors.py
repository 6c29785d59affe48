"""The one place where errors become HTTP answers (ARCHITECTURE.md, "Errors").

Every error the gateway can meet maps here, once, to a status, an OpenAI error envelope
(``{"error": {"message", "type", "code", "param"}}``) and the headers the official ``openai``
client acts on. What that client does (openai 3.x ``_base_client.py``/``_client.py``), and so
what the mapping guarantees:

- The exception class follows the status alone: 400 ``BadRequestError``, 401
  ``AuthenticationError``, 403 ``PermissionDeniedError``, 404 ``NotFoundError``, 429
  ``RateLimitError``, >= 500 ``InternalServerError``.
- It retries 408, 409, 429 and every 5xx, unless ``x-should-retry`` says otherwise. It sleeps
  for ``retry-after-ms`` (preferred) or ``retry-after`` when ``0 < delay <= 120`` s, and does not
  retry at all when the delay is longer. So every 429/503 carries both headers (``Retry-After``
  whole seconds rounded up, at least 1, as RFC 9110 10.2.3 allows only integers;
  ``retry-after-ms`` exact, rounded up), and a refusal no wait can cure (a request larger than
  the whole token quota) says ``x-should-retry: false`` instead.
- Messages say what happened and why (``"shed: server overloaded, retry after 2s"``); the
  ``x-headway-reason`` header repeats the machine reason for operators. Messages are composed
  here from the error's ``reason``, never copied from guard internals (limiter or endpoint names
  stay private), and an unexpected exception yields a generic 500 without its text.

Gateway-side refusals that are not guard decisions (bad body, bad key, model not allowed,
unknown model, body too large) are the :class:`GatewayError` classes defined here.
"""

from __future__ import annotations

import math
from typing import NamedTuple

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
from headway.http import Header, Response, error_response

__all__ = [
    "AuthError",
    "BadRequest",
    "GatewayError",
    "HttpError",
    "ModelNotAllowed",
    "ModelNotFound",
    "PayloadTooLarge",
    "UpstreamHttpError",
    "error_response_for",
    "http_error",
    "retry_after_headers",
    "upstream_error_passthrough",
]


# -- the gateway's own refusals ------------------------------------------------------------------


class GatewayError(HeadwayError):
    """A refusal decided by the gateway itself; carries its HTTP mapping as class attributes."""

    status = 400
    type = "invalid_request_error"
    code: str | None = None
    reason = "bad_request"

    def __init__(
        self,
        message: str = "",
        *,
        param: str | None = None,
        code: str | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, reason=reason)
        #: The request field at fault (OpenAI's ``param``), e.g. ``"messages[0].role"``.
        self.param = param
        if code is not None:
            self.code = code


class BadRequest(GatewayError):
    """The request body is not valid JSON or has a field of the wrong shape (400)."""


class AuthError(GatewayError):
    """No API key, a malformed one, or one no tenant owns (401)."""

    status = 401
    type = "authentication_error"
    code = "invalid_api_key"
    reason = "invalid_api_key"


class ModelNotAllowed(GatewayError):
    """The tenant's key may not use this model (403)."""

    status = 403
    type = "permission_error"
    code = "model_not_allowed"
    reason = "model_not_allowed"


class ModelNotFound(GatewayError):
    """No route serves this model (404, ``model_not_found`` as OpenAI answers)."""

    status = 404
    type = "invalid_request_error"
    code = "model_not_found"
    reason = "model_not_found"


class NotFound(GatewayError):
    """No such path on this gateway (404)."""

    status = 404
    type = "invalid_request_error"
    code = "not_found"
    reason = "not_found"


class MethodNotAllowed(GatewayError):
    """The path exists but not with this method (405)."""

    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"
    reason = "method_not_allowed"


class PayloadTooLarge(GatewayError):
    """The request body is over the configured size limit (413)."""

    status = 413
    type = "invalid_request_error"
    code = "request_too_large"
    reason = "body_too_large"


class UpstreamHttpError(UpstreamError):
    """An upstream answered with an error status; ``body`` is its answer, relayed verbatim when
    the status passes through (see :func:`upstream_error_passthrough`)."""

    def __init__(
        self,
        message: str = "",
        *,
        status: int,
        body: bytes = b"",
        content_type: bytes = b"application/json",
        retry_after: float | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, status=status, retry_after=retry_after, reason=reason)
        self.body = body
        self.content_type = content_type


# -- the mapping -----------------------------------------------------------------------------------


class HttpError(NamedTuple):
    """What an error becomes on the wire (before encoding)."""

    status: int
    type: str
    code: str | None
    message: str
    #: Seconds to put in ``Retry-After``/``retry-after-ms``; None sends neither.
    retry_after: float | None
    param: str | None = None
    #: The machine reason, sent as ``x-headway-reason``.
    reason: str = "internal_error"
    #: False sends ``x-should-retry: false`` (no wait can help); None leaves it to the client.
    should_retry: bool | None = None


# When a guard refuses without knowing when capacity frees up, 429/503 still carry a hint
# (ARCHITECTURE.md: Retry-After on 429/503). Our choice: 1 s, the smallest value Retry-After
# can express; the guards know the real value in almost every case.
DEFAULT_RETRY_AFTER = 1.0

# Upstream 4xx answers that describe the caller's request pass through with the upstream's own
# status and body. Excluded: 429 (the upstream is rate-limiting the *gateway*, not this client:
# 503 with the upstream's Retry-After), and 401/403/407 (the gateway's upstream credentials are
# wrong: relaying them would tell the client its own key is bad; 502 instead).
_NOT_PASSED_THROUGH = frozenset({401, 403, 407, 429})

# Reasons whose refusal no amount of waiting cures: the cost is larger than the whole quota.
_NEVER_ADMISSIBLE = frozenset({"cost_exceeds_burst", "tenant_tpm_too_large"})

# 429 ``type`` as OpenAI sends it: "tokens" for token quotas, "requests" for request quotas.
_TOKEN_REASONS = frozenset({"tenant_tpm", "tenant_tpm_too_large"})

# What each reason means, in words, for the message. Unknown reasons fall back per class.
_PHRASES = {
    # tenant quotas (headway.gateway._tenants)
    "tenant_rpm": "requests-per-minute quota exceeded for this API key",
    "tenant_tpm": "tokens-per-minute quota exceeded for this API key",
    "tenant_tpm_too_large": (
        "request needs more tokens than this API key's whole tokens-per-minute quota; "
        "reduce the prompt or max_tokens"
    ),
    "tenant_concurrency": "too many concurrent requests for this API key",
    "cost_exceeds_burst": "request is larger than the whole rate limit allows",
    "rate_limited": "rate limit exceeded",
    # shedding and concurrency (headway.guard.shed, headway.guard.concurrency)
    "shed": "server overloaded",
    "queue_full": "server overloaded, admission queue full",
    "deadline": "server overloaded, request would miss its deadline in the queue",
    "queue_timeout": "server overloaded, timed out waiting for capacity",
    "concurrency_limit": "server overloaded, concurrency limit reached",
    "overloaded": "server overloaded",
    "circuit_open": "upstream unavailable (circuit open)",
    "rejected": "request refused",
    # upstream failures
    "upstream_rate_limited": "upstream is rate limiting the gateway",
    "upstream_timeout": "upstream timed out",
    "upstream_error": "upstream failed",
    "upstream_auth": "gateway could not authenticate to the upstream",
    "deadline_exceeded": "request deadline exceeded",
}


def _phrase(reason: str, fallback: str) -> str:
    return _PHRASES.get(reason, fallback)


def _whole_seconds(retry_after: float) -> int:
    return max(1, math.ceil(retry_after))


def _rejection(exc: Rejected, status: int, type_: str, code: str, fallback: str) -> HttpError:
    reason = exc.reason
    retry_after = exc.retry_after
    phrase = _phrase(reason, fallback)
    if reason in _NEVER_ADMISSIBLE or (retry_after is not None and math.isinf(retry_after)):
        return HttpError(status, type_, code, f"{reason}: {phrase}", None, None, reason, False)
    if retry_after is None or not retry_after > 0:
        retry_after = DEFAULT_RETRY_AFTER
    message = f"{reason}: {phrase}, retry after {_whole_seconds(retry_after)}s"
    return HttpError(status, type_, code, message, retry_after, None, reason)


def upstream_error_passthrough(exc: UpstreamError) -> bool:
    """Whether an upstream error keeps the upstream's status (and body, when it has one): a
    4xx about the request itself, i.e. 400..499 except 401, 403, 407 and 429."""
    status = exc.status
    return status is not None and 400 <= status <= 499 and status not in _NOT_PASSED_THROUGH


def _upstream(exc: UpstreamError) -> HttpError:
    reason = exc.reason
    status = exc.status
    if isinstance(exc, UpstreamTimeout):
        message = f"{reason}: upstream timed out"
        return HttpError(504, "server_error", "upstream_timeout", message, None, reason=reason)
    if upstream_error_passthrough(exc):
        message = f"upstream rejected the request ({status})"
        return HttpError(status or 400, "invalid_request_error", None, message, None, reason=reason)
    if status == 429:
        retry_after = exc.retry_after
        if retry_after is None or not retry_after > 0:
            retry_after = DEFAULT_RETRY_AFTER
        reason = "upstream_rate_limited"
        message = f"{reason}: {_PHRASES[reason]}, retry after {_whole_seconds(retry_after)}s"
        return HttpError(503, "server_error", reason, message, retry_after, reason=reason)
    if status in _NOT_PASSED_THROUGH:
        reason = "upstream_auth"
        message = f"{reason}: {_PHRASES[reason]} ({status})"
        return HttpError(502, "server_error", reason, message, None, reason=reason)
    message = f"{reason}: {_phrase(reason, 'upstream failed')}"
    if status is not None:
        message += f" ({status})"
    return HttpError(502, "server_error", "bad_gateway", message, None, reason=reason)


def http_error(exc: BaseException) -> HttpError:
    """Map any exception to its HTTP form. Unknown exceptions become a generic 500 whose
    message reveals nothing about them."""
    if isinstance(exc, GatewayError):
        return HttpError(exc.status, exc.type, exc.code, str(exc), None, exc.param, exc.reason)
    if isinstance(exc, RateLimited):
        type_ = "tokens" if exc.reason in _TOKEN_REASONS else "requests"
        return _rejection(exc, 429, type_, "rate_limit_exceeded", "rate limit exceeded")
    if isinstance(exc, CircuitOpen):
        return _rejection(exc, 503, "server_error", "circuit_open", "upstream unavailable")
    if isinstance(exc, Overloaded):
        return _rejection(exc, 503, "server_error", "overloaded", "server overloaded")
    if isinstance(exc, Rejected):
        return _rejection(exc, 503, "server_error", "overloaded", "request refused")
    if isinstance(exc, DeadlineExceeded):
        # No x-should-retry: a fresh attempt gets a fresh deadline, so the client may retry.
        reason = exc.reason
        message = f"{reason}: request deadline exceeded"
        return HttpError(504, "server_error", "deadline_exceeded", message, None, reason=reason)
    if isinstance(exc, UpstreamError):
        return _upstream(exc)
    # Anything else is a bug: say nothing about it (its text may hold internals).
    message = "internal error in the gateway"
    return HttpError(500, "server_error", "internal_error", message, None)


_TOKEN_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:")


def _is_token(reason: str) -> bool:
    """Safe as a header value: ASCII word characters only (no CR/LF injection)."""
    return 0 < len(reason) <= 64 and reason.isascii() and _TOKEN_CHARS.issuperset(reason.encode())


def retry_after_headers(retry_after: float) -> list[Header]:
    """``Retry-After`` (whole seconds, ceil, >= 1) and ``retry-after-ms`` (ceil, >= 1)."""
    return [
        (b"retry-after", b"%d" % _whole_seconds(retry_after)),
        (b"retry-after-ms", b"%d" % max(1, math.ceil(retry_after * 1000.0))),
    ]


def reason_label(reason: str) -> str:
    """``reason`` if it is safe as a header value and a metric label, else ``"error"``."""
    return reason if _is_token(reason) else "error"


def error_response_for(exc: BaseException) -> Response:
    """The complete HTTP answer for ``exc`` (OpenAI error envelope + headers)."""
    err = http_error(exc)
    reason = reason_label(err.reason)
    headers: list[Header] = [(b"x-headway-reason", reason.encode())]
    if err.retry_after is not None:
        headers.extend(retry_after_headers(err.retry_after))
    if err.should_retry is False:
        headers.append((b"x-should-retry", b"false"))
    if err.status == 401:
        # RFC 9110 11.6.1: a 401 must say which scheme to use.
        headers.append((b"www-authenticate", b"Bearer"))
    if isinstance(exc, UpstreamHttpError) and exc.body and upstream_error_passthrough(exc):
        # Relay the upstream's own answer: its message names the real problem.
        return Response(err.status, exc.body, headers=headers, content_type=exc.content_type)
    return error_response(
        err.status, err.message, type=err.type, code=err.code, param=err.param, headers=headers
    )
