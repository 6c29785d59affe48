"""Where an upstream pool sends its requests: one origin (scheme, host, port) and a base path.

Parsed once when the pool is built, so the hot path only concatenates ready-made bytes: the
``host`` header line and the base path are pre-encoded here. Only plain ``http`` is accepted:
TLS to upstreams is not supported yet and says so, instead of silently speaking cleartext.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from headway.core import chained

__all__ = ["Origin", "parse_origin"]


@dataclass(frozen=True)
class Origin:
    host: str
    port: int
    #: Prefix of every request path, without a trailing slash (``b""`` or ``b"/v1"``).
    base_path: bytes
    #: The ``host`` header value: ``host[:port]`` (port left out when it is 80).
    authority: bytes

    @property
    def url(self) -> str:
        return f"http://{self.authority.decode('latin-1')}{self.base_path.decode('latin-1')}"


def parse_origin(url: str) -> Origin:
    """``http://host[:port][/base/path]`` -> :class:`Origin`; ``ValueError`` says what is wrong."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme == "https":
        raise ValueError(
            f"upstream {url!r}: TLS to upstreams is not supported yet; use an http:// URL "
            "(for example via a local TLS-terminating sidecar)"
        )
    if scheme != "http":
        raise ValueError(f"upstream {url!r}: expected an http://host:port[/path] URL")
    if parts.query or parts.fragment:
        raise ValueError(f"upstream {url!r}: a base URL cannot carry a query or fragment")
    if parts.username or parts.password:
        raise ValueError(f"upstream {url!r}: credentials in the URL are not supported")
    host = parts.hostname
    if not host:
        raise ValueError(f"upstream {url!r}: missing host")
    try:
        port = parts.port or 80
    except ValueError as exc:
        raise chained(ValueError(f"upstream {url!r}: {exc}"), None)  # noqa: B904 - from None
    if " " in parts.path:
        raise ValueError(f"upstream {url!r}: the base path must be percent-encoded")
    shown = f"[{host}]" if ":" in host else host
    authority = shown if port == 80 else f"{shown}:{port}"
    return Origin(
        host=host,
        port=port,
        base_path=parts.path.rstrip("/").encode("latin-1"),
        authority=authority.encode("latin-1"),
    )
