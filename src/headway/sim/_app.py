"""The simulator's request handler: OpenAI routes, the server model, and fault injection.

Timing model, per request: wait in the FIFO capacity queue, then prefill (time to first token
= ``ttft_base + ttft_per_prompt_token * prompt_tokens`` plus any injected spike), then decode
at ``tokens_per_second``, holding one capacity slot throughout. A streamed response sends its
headers at once and its first chunk after queue + prefill (as OpenAI does); each later token is
due at a fixed offset from the first, so sleeping late never slows the whole stream down.

Faults (drawn once per request, see ``_faults``) act before any answer (error status, hang,
reset) or inside a stream (stall after N chunks, a malformed chunk). Every error answer uses the
OpenAI error envelope. All sleeping goes through the injected ``Clock``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson

from headway.core import REAL_CLOCK, Clock
from headway.http import (
    AbortConnection,
    Request,
    Response,
    StreamingResponse,
    error_response,
)

from . import _openai as fmt
from ._capacity import Capacity, QueueFull
from ._config import SimConfig
from ._faults import NO_FAULT, FaultPlan, Faults

__all__ = ["SimApp"]

Route = Callable[[Request], Awaitable[Response | StreamingResponse]]

# Below this a token's wait is skipped (it goes out with the next write) rather than slept:
# event-loop timers are no finer than about a millisecond anyway.
_MIN_SLEEP = 0.001
# Yield to the loop at least this often in a stream that never needs to sleep.
_YIELD_EVERY = 64


class SimApp:
    """A handler for ``headway.http.HttpServer`` that behaves like an OpenAI endpoint."""

    def __init__(self, config: SimConfig | None = None, *, clock: Clock = REAL_CLOCK) -> None:
        self.config = config = config or SimConfig()
        self.clock = clock
        self.faults = Faults(config.faults, config.seed)
        self.capacity = Capacity(config.capacity, config.max_queue)
        self._seq = 0
        self.served = 0
        self.errors = 0
        self._routes: dict[tuple[str, str], Route] = {
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/completions"): self._completions,
            ("POST", "/v1/embeddings"): self._embeddings,
            ("GET", "/v1/models"): self._models,
            ("GET", "/sim/faults"): self._get_faults,
            ("POST", "/sim/faults"): self._set_faults,
            ("DELETE", "/sim/faults"): self._reset_faults,
            ("GET", "/sim/stats"): self._stats,
            ("GET", "/health"): self._health,
        }
        self._paths = {path for _, path in self._routes}

    async def __call__(self, request: Request) -> Response | StreamingResponse:
        route = self._routes.get((request.method, request.path))
        if route is None:
            if request.path in self._paths:
                return error_response(405, f"method {request.method} not allowed")
            return error_response(404, f"no route for {request.path}", code="not_found")
        return await route(request)

    def snapshot(self) -> dict[str, float]:
        return {
            "active": float(self.capacity.active),
            "queued": float(self.capacity.queued),
            "served": float(self.served),
            "errors": float(self.errors),
            "faults_injected": float(self.faults.injected),
        }

    # ---- generation ---------------------------------------------------------------------

    def _next_id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}-sim{self._seq:08x}"

    def _body(self, request: Request) -> dict[str, Any] | Response:
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return error_response(400, "request body is not valid JSON")
        if not isinstance(body, dict):
            return error_response(400, "request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return error_response(400, "you must provide a model parameter", param="model")
        if self.config.strict_models and model not in self.config.models:
            return error_response(
                404, f"the model {model!r} does not exist", code="model_not_found", param="model"
            )
        return body

    def _output_tokens(self, body: dict[str, Any]) -> tuple[int, str] | Response:
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if limit is None:
            return self.config.default_output_tokens, "stop"
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            return error_response(400, "max_tokens must be a positive integer", param="max_tokens")
        return limit, "length"

    async def _before_answer(self, plan: FaultPlan) -> Response | None:
        """Faults that replace the answer: reset, hang, error."""
        if plan.reset:
            raise AbortConnection
        if plan.hang:
            await asyncio.get_running_loop().create_future()  # until the client leaves
        if plan.error_status:
            self.errors += 1
            headers: tuple[tuple[bytes, bytes], ...] = ()
            if plan.retry_after is not None:
                headers = ((b"retry-after", b"%d" % max(0, round(plan.retry_after))),)
            return error_response(
                plan.error_status, "injected fault", code="sim_injected_fault", headers=headers
            )
        return None

    def _ttft(self, prompt: int, plan: FaultPlan) -> float:
        c = self.config
        return c.ttft_base + c.ttft_per_prompt_token * prompt + plan.extra_latency

    async def _generate(self, request: Request, *, chat: bool) -> Response | StreamingResponse:
        body = self._body(request)
        if isinstance(body, Response):
            return body
        key = "messages" if chat else "prompt"
        source = body.get(key)
        if chat and (not isinstance(source, list) or not source):
            return error_response(400, "messages must be a non-empty array", param="messages")
        if not chat and source is None:
            return error_response(400, "you must provide a prompt", param="prompt")
        out = self._output_tokens(body)
        if isinstance(out, Response):
            return out
        n_out, finish = out
        prompt = fmt.prompt_tokens(source)
        plan = self.faults.plan()
        if plan is not NO_FAULT:
            replaced = await self._before_answer(plan)
            if replaced is not None:
                return replaced
        model: str = body["model"]
        rid = self._next_id("chatcmpl" if chat else "cmpl")
        created = int(time.time())
        capacity = self.capacity
        if capacity.full:
            return error_response(429, "simulated server queue is full", code="queue_full")
        if body.get("stream") is True:
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            chunks = fmt.ChatChunks(rid, created, model, chat=chat, include_usage=include_usage)
            return StreamingResponse(
                self._stream(chunks, prompt, n_out, finish, plan),
                headers=((b"cache-control", b"no-cache"),),
            )
        try:
            await capacity.acquire()
        except QueueFull:
            return error_response(429, "simulated server queue is full", code="queue_full")
        try:
            rate = self.config.tokens_per_second
            decode = n_out / rate if rate > 0 else 0.0
            stall = plan.stall_seconds if plan.stall_after >= 0 else 0.0
            await self.clock.sleep(self._ttft(prompt, plan) + decode + stall)
        finally:
            capacity.release()
        self.served += 1
        if plan.malformed_after >= 0:
            return Response(200, b'{"id":"' + rid.encode() + b'","object":"chat.comp')
        text = "".join(fmt.token_text(i) for i in range(n_out))
        build = fmt.chat_completion if chat else fmt.completion
        return Response(200, build(rid, created, model, text, finish, prompt, n_out))

    async def _stream(
        self, chunks: fmt.ChatChunks, prompt: int, n_out: int, finish: str, plan: FaultPlan
    ) -> AsyncIterator[bytes]:
        clock = self.clock
        capacity = self.capacity
        try:
            await capacity.acquire()
        except QueueFull:
            raise AbortConnection from None  # lost the race for the last queue place
        try:
            await clock.sleep(self._ttft(prompt, plan))
            first = chunks.first()
            if first is not None:
                yield first
            rate = self.config.tokens_per_second
            interval = 1.0 / rate if rate > 0 else 0.0
            start = clock.now()
            unslept = 0
            for i in range(n_out):
                if i == plan.stall_after:
                    await clock.sleep(plan.stall_seconds)
                    start += plan.stall_seconds
                delay = start + i * interval - clock.now()
                if delay >= _MIN_SLEEP:
                    await clock.sleep(delay)
                    unslept = 0
                else:
                    unslept += 1
                    if unslept >= _YIELD_EVERY:
                        await asyncio.sleep(0)
                        unslept = 0
                if i == plan.malformed_after:
                    yield chunks.malformed()
                    continue
                yield chunks.token(fmt.token_text(i))
            yield chunks.finish(finish)
            if chunks.include_usage:
                yield chunks.usage(prompt, n_out)
            yield chunks.done()
            self.served += 1
        finally:
            capacity.release()

    # ---- routes ---------------------------------------------------------------------------

    async def _chat(self, request: Request) -> Response | StreamingResponse:
        return await self._generate(request, chat=True)

    async def _completions(self, request: Request) -> Response | StreamingResponse:
        return await self._generate(request, chat=False)

    async def _embeddings(self, request: Request) -> Response | StreamingResponse:
        body = self._body(request)
        if isinstance(body, Response):
            return body
        try:
            inputs = fmt.embedding_inputs(body.get("input"))
        except ValueError as exc:
            return error_response(400, str(exc), param="input")
        encoding = body.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            return error_response(400, "encoding_format must be float or base64")
        dims = body.get("dimensions", self.config.embedding_dims)
        if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
            return error_response(400, "dimensions must be a positive integer", param="dimensions")
        plan = self.faults.plan()
        if plan is not NO_FAULT:
            replaced = await self._before_answer(plan)
            if replaced is not None:
                return replaced
            if plan.extra_latency:
                await self.clock.sleep(plan.extra_latency)
        self.served += 1
        return Response(200, fmt.embeddings(body["model"], inputs, dims, encoding))

    async def _models(self, request: Request) -> Response:
        return Response(200, fmt.models_list(self.config.models, 1_700_000_000))

    async def _get_faults(self, request: Request) -> Response:
        return Response(200, orjson.dumps(self.faults.config.to_dict()))

    async def _set_faults(self, request: Request) -> Response:
        try:
            changes = orjson.loads(request.body or b"{}")
        except orjson.JSONDecodeError:
            return error_response(400, "request body is not valid JSON")
        if not isinstance(changes, dict):
            return error_response(400, "request body must be a JSON object")
        try:
            config = self.faults.update(changes)
        except ValueError as exc:
            return error_response(400, str(exc))
        return Response(200, orjson.dumps(config.to_dict()))

    async def _reset_faults(self, request: Request) -> Response:
        return Response(200, orjson.dumps(self.faults.reset().to_dict()))

    async def _stats(self, request: Request) -> Response:
        return Response(200, orjson.dumps(self.snapshot()))

    async def _health(self, request: Request) -> Response:
        return Response(200, b'{"status":"ok"}')
