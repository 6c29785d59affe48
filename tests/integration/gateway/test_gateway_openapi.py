"""The gateway's HTTP surface is described by a valid OpenAPI document at /openapi.json."""

from __future__ import annotations

import asyncio

import orjson
from openapi_spec_validator import validate

from conftest import Running


async def _get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def test_openapi_document_is_served_and_valid(gw: Running) -> None:
    status, body = await _get(gw.gateway.api_port, "/openapi.json")
    assert status == 200
    document = orjson.loads(body)
    validate(document)  # raises on an invalid OpenAPI 3.1 document
    paths = document["paths"]
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models"):
        assert path in paths
    chat = paths["/v1/chat/completions"]["post"]["responses"]
    assert set(chat) >= {"200", "400", "401", "403", "404", "413", "429", "503", "504"}
    assert "Retry-After" in chat["429"]["headers"]
    assert "Retry-After" in chat["503"]["headers"]


async def test_every_served_path_is_documented(gw: Running) -> None:
    _, body = await _get(gw.gateway.api_port, "/openapi.json")
    documented = set(orjson.loads(body)["paths"])
    for path in ("/healthz", "/readyz", "/openapi.json", "/v1/models"):
        status, _ = await _get(gw.gateway.api_port, path)
        assert status != 404, path
        assert path in documented
    status, _ = await _get(gw.gateway.api_port, "/v1/undocumented")
    assert status == 404
