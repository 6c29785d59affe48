"""OpenTelemetry tracing for the gateway: one span tree per API request, exported over OTLP/HTTP.

The tree an operator sees for one request::

    POST /v1/chat/completions      SERVER  tenant, model, status, tokens, request id, decisions
      admission                    INTERNAL  gateway priority queue + tenant quotas
      POST /chat/completions       CLIENT  attempt 1: endpoint, pool, status or error
      POST /chat/completions       CLIENT  attempt 2: retry after a backoff, or a hedge
      fallback                     INTERNAL  serving from another model after this one failed
        POST /chat/completions     CLIENT  attempt 3 on the fallback model's pool

The request span's parent is the caller's W3C ``traceparent`` when it sent one (the caller's
sampling decision is kept: parent-based sampling); each attempt sends upstream the
``traceparent`` of its own span, so the upstream's spans hang under the attempt that called it.
A streamed request's span ends when its stream ends.

Cost: the gateway holds ``tracer: GatewayTracer | None``; with tracing off every hook point is
one ``is None`` check and this module's OpenTelemetry imports never run (the SDK is the optional
``otel`` extra). Guards are not touched: retries, hedges and fallbacks are learnt from the
:class:`headway.core.Hooks` events they already emit, matched to the request through a context
variable (hedged attempts run in child tasks, which inherit it). Spans are exported by the SDK's
batch processor on its own thread, so the event loop never waits on the collector; a full
export queue drops spans, never requests.

Privacy: a span carries only what the access log may carry (configured names, counts, times,
statuses): never keys, headers, prompts or error messages an upstream or client wrote; a model
name that is not configured is recorded as ``"other"``.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from headway.core import REAL_CLOCK, Clock, Priority

from ._labels import OTHER
from ._trail import decision_for, decision_reasons

if TYPE_CHECKING:  # the SDK is optional: imported for real only when a tracer is built
    from opentelemetry.context import Context as OtelContext
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

__all__ = [
    "AttemptSpan",
    "GatewayTracer",
    "RequestTrace",
    "TracingHooks",
    "TracingUnavailable",
]

Header = tuple[bytes, bytes]
_TRACE_HEADERS = (b"traceparent", b"tracestate")
# OpenTelemetry gen_ai.operation.name values for the gateway's endpoints (gen-ai semconv).
_OPERATIONS = {"chat": "chat", "completions": "text_completion", "embeddings": "embeddings"}

#: The trace of the request the running task serves (hedged attempts inherit it).
_CURRENT: contextvars.ContextVar[RequestTrace | None] = contextvars.ContextVar(
    "headway_request_trace", default=None
)


class TracingUnavailable(RuntimeError):
    """Tracing is on but the OpenTelemetry SDK or its OTLP exporter cannot be imported."""


class GatewayTracer:
    """Owns one OpenTelemetry ``TracerProvider`` (never the process-global one, so two gateways
    in a process keep their spans apart) and makes the gateway's spans."""

    def __init__(
        self,
        *,
        endpoint: str,
        service_name: str = "headway",
        sample_ratio: float = 1.0,
        export_timeout: float = 10.0,
        batch_delay: float = 5.0,
        max_queue: int = 2048,
        max_batch: int = 512,
        headers: Mapping[str, str] | None = None,
        clock: Clock = REAL_CLOCK,
        models: Iterable[str] | None = None,
        settings: object = None,
    ) -> None:
        """``models``: the configured model names a span may show (anything else is
        ``"other"``); ``clock`` times retry backoffs (the gateway's clock); ``settings``: the
        config this tracer was built from, kept so a reload can tell whether it changed."""
        try:
            from opentelemetry import trace
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
        except ImportError as exc:
            raise TracingUnavailable(
                f"observe.tracing is enabled but OpenTelemetry cannot be imported ({exc}); "
                "install it with: pip install 'headway[otel]'"
            ) from exc
        from headway import __version__

        self.endpoint = endpoint
        self.settings = settings
        self._clock = clock
        self._models = None if models is None else frozenset(models)
        self._trace = trace
        self._propagator = TraceContextTextMapPropagator()
        self._server_kind = trace.SpanKind.SERVER
        self._client_kind = trace.SpanKind.CLIENT
        self._error = trace.StatusCode.ERROR
        self._addresses: dict[str, tuple[str | None, int | None]] = {}
        exporter = OTLPSpanExporter(
            endpoint=endpoint, headers=dict(headers or {}), timeout=export_timeout
        )
        self._provider: TracerProvider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
            resource=Resource.create(
                {"service.name": service_name, "service.version": __version__}
            ),
            shutdown_on_exit=False,  # the gateway flushes and shuts it down in stop()
        )
        self._provider.add_span_processor(
            BatchSpanProcessor(
                exporter,
                max_queue_size=max_queue,
                schedule_delay_millis=batch_delay * 1000.0,
                max_export_batch_size=max_batch,
                export_timeout_millis=export_timeout * 1000.0,
            )
        )
        self._tracer: Tracer = self._provider.get_tracer("headway", __version__)
        self._export_timeout = export_timeout

    # -- spans -----------------------------------------------------------------------------------

    def request(
        self, method: str, path: str, operation: str, headers: Mapping[bytes, bytes]
    ) -> RequestTrace:
        """Start the SERVER span of an API request (child of the caller's ``traceparent``)."""
        parent: OtelContext | None = None
        incoming = headers.get(b"traceparent")
        if incoming is not None:
            carrier = {"traceparent": incoming.decode("latin-1")}
            state = headers.get(b"tracestate")
            if state is not None:
                carrier["tracestate"] = state.decode("latin-1")
            parent = self._propagator.extract(carrier)
        span = self._tracer.start_span(
            f"{method} {path}",
            context=parent,
            kind=self._server_kind,
            attributes={
                "http.request.method": method,
                "url.path": path,
                "http.route": path,
                "url.scheme": "http",
                "gen_ai.operation.name": _OPERATIONS.get(operation, operation),
            },
        )
        return RequestTrace(self, span)

    def attempt(self, pool: str, endpoint: str, url: str, path: bytes) -> AttemptSpan:
        """Start the CLIENT span of one upstream attempt, under the current request's span (or
        its fallback span)."""
        trace = _CURRENT.get()
        if trace is not None and not trace.recording:
            # Sampled out: no span would be exported, so none is made; the upstream still gets
            # the trace id (in the request span's context, flagged not sampled).
            return AttemptSpan(self, trace.span, None)
        address = self._addresses.get(url)
        if address is None:
            parts = urlsplit(url)
            address = self._addresses[url] = (parts.hostname, parts.port)
        attributes: dict[str, Any] = {
            "http.request.method": "POST",
            "url.path": path.decode("latin-1"),
            "headway.pool": pool,
            "headway.endpoint": endpoint,
        }
        host, port = address
        if host is not None:
            attributes["server.address"] = host
        if port is not None:
            attributes["server.port"] = port
        parent: OtelContext | None = None
        if trace is not None:
            parent = trace.attempt_parent
            trace.attempts += 1
            number = trace.attempts
            attributes["headway.attempt"] = number
            if number > 1:
                attributes["http.request.resend_count"] = number - 1
            if trace.hedges_pending:
                trace.hedges_pending -= 1
                attributes["headway.hedge"] = True
            elif trace.retry_at is not None:
                attributes["headway.retry"] = True
                attributes["headway.retry.backoff"] = max(0.0, self._clock.now() - trace.retry_at)
                trace.retry_at = None
            if trace.fallback is not None:
                attributes["headway.fallback"] = True
        span = self._tracer.start_span(
            "POST " + path.decode("latin-1"),
            context=parent,
            kind=self._client_kind,
            attributes=attributes,
        )
        attempt = AttemptSpan(self, span, trace)
        if trace is not None:
            trace.open.add(attempt)
        return attempt

    def set_models(self, models: Iterable[str]) -> None:
        """The configured model names after a reload."""
        self._models = frozenset(models)

    def model_label(self, model: str | None) -> str | None:
        if model is None or self._models is None or model in self._models:
            return model
        return OTHER

    # -- lifecycle -------------------------------------------------------------------------------

    def force_flush(self) -> bool:
        """Export every finished span now (blocking; waits at most the export timeout)."""
        return self._provider.force_flush(int(self._export_timeout * 1000))

    async def aclose(self) -> None:
        """Flush finished spans, then stop the exporter thread; the event loop keeps running
        meanwhile (the SDK's flush and shutdown block their caller)."""
        await asyncio.to_thread(self.force_flush)
        await asyncio.to_thread(self._provider.shutdown)


class RequestTrace:
    """One API request's span and what its child spans need while it runs."""

    __slots__ = (
        "_admission",
        "_token",
        "_tracer",
        "attempt_parent",
        "attempts",
        "context",
        "decisions",
        "fallback",
        "hedges_pending",
        "open",
        "recording",
        "retry_at",
        "span",
    )

    def __init__(self, tracer: GatewayTracer, span: Span) -> None:
        self._tracer = tracer
        self.span = span
        self.context: OtelContext = tracer._trace.set_span_in_context(span)
        #: Where attempt spans hang: the request span, or the fallback span once it started.
        self.attempt_parent = self.context
        self.attempts = 0
        self.hedges_pending = 0
        self.retry_at: float | None = None
        #: False when sampled out: then no child span is made and no event recorded.
        self.recording = span.is_recording()
        self.fallback: Span | None = None
        self.open: set[AttemptSpan] = set()
        #: What guards decided on this request, in order (as the access log's ``decisions``).
        self.decisions: list[str] = []
        self._admission: Span | None = None
        self._token: contextvars.Token[RequestTrace | None] | None = None

    @property
    def trace_id(self) -> str:
        """The trace id as 32 lowercase hex digits (for the access log)."""
        return format(self.span.get_span_context().trace_id, "032x")

    def enter(self) -> None:
        """Make this the running task's request (guard events and attempts find it)."""
        self._token = _CURRENT.set(self)

    def exit(self) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)
            self._token = None

    def admission_start(self, priority: Priority, tenant: str) -> None:
        """The request waits for a gateway slot and its tenant's quotas from now."""
        if not self.recording:
            return
        self._admission = self._tracer._tracer.start_span(
            "admission",
            context=self.context,
            attributes={"headway.priority": priority.name.lower(), "headway.tenant": tenant},
        )

    def admission_end(self) -> None:
        """The request was admitted (a refusal ends the span in :meth:`end`)."""
        span = self._admission
        if span is not None:
            self._admission = None
            span.end()

    def on_event(self, kind: str, name: str, event: str, value: float) -> None:
        """A guard acted on this request: mark the next attempt, open a fallback span, and
        record the decision as an event on the request span."""
        if kind == "retry" and event == "retry":
            self.retry_at = self._tracer._clock.now()
        elif kind == "hedge" and event == "hedge.sent":
            self.hedges_pending += 1
        elif kind == "fallback" and event.startswith("fallback.") and self.fallback is None:
            reason = event[9:]
            self.fallback = self._tracer._tracer.start_span(
                "fallback",
                context=self.context,
                attributes={"headway.fallback.from": name, "headway.fallback.reason": reason},
            )
            self.attempt_parent = self._tracer._trace.set_span_in_context(self.fallback)
            self._decided("fell_back", {"headway.fallback.reason": reason})
            return
        decision = decision_for(kind, event)
        if decision is not None:
            self._decided(decision, {"headway.guard": kind, "headway.guard.name": name})

    def _decided(self, decision: str, attributes: dict[str, Any]) -> None:
        self.span.add_event(decision, attributes)
        if decision not in self.decisions:
            self.decisions.append(decision)

    def end(
        self,
        status: int,
        reason: str,
        *,
        request_id: str | None,
        tenant: str | None,
        model: str | None,
        endpoint: str | None,
        stream: bool,
        ttft: float | None,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        attributes: Mapping[str, object] | None,
    ) -> None:
        """The request is answered (a stream: its last chunk is sent): end every span left."""
        span = self.span
        failed = status >= 400
        error = self._tracer._error
        admission = self._admission
        if admission is not None:  # refused while waiting for admission
            self._admission = None
            if failed:
                admission.set_attribute("error.type", reason)
                admission.set_status(error)
            admission.end()
        for attempt in list(self.open):
            attempt.fail(None)
        if self.fallback is not None:
            if failed:
                self.fallback.set_status(error)
            self.fallback.end()
        if span.is_recording():
            span.set_attribute("http.response.status_code", status)
            span.set_attribute("headway.stream", stream)
            if request_id is not None:
                span.set_attribute("headway.request_id", request_id)
            if tenant is not None:
                span.set_attribute("headway.tenant", tenant)
            model = self._tracer.model_label(model)
            if model is not None:
                span.set_attribute("gen_ai.request.model", model)
            if endpoint is not None:
                span.set_attribute("headway.endpoint", endpoint)
            if ttft is not None:
                span.set_attribute("headway.time_to_first_token", ttft)
            if prompt_tokens is not None:
                span.set_attribute("gen_ai.usage.input_tokens", prompt_tokens)
            if completion_tokens is not None:
                span.set_attribute("gen_ai.usage.output_tokens", completion_tokens)
            decisions = self.decisions
            for decision in decision_reasons(attributes):  # e.g. "cached", set by guards
                if decision not in decisions:
                    decisions.append(decision)
            if decisions:
                span.set_attribute("headway.decisions", decisions)
            if failed:
                span.set_attribute("error.type", reason)
                if status >= 500:  # a 4xx is the client's doing (HTTP semconv, server spans)
                    span.set_status(error)
        span.end()


class AttemptSpan:
    """One upstream attempt's CLIENT span; ended exactly once, by whichever outcome comes
    first (answer, error, cancellation, end of stream, or the end of its request)."""

    __slots__ = ("_done", "_request", "_tracer", "span")

    def __init__(self, tracer: GatewayTracer, span: Span, request: RequestTrace | None) -> None:
        self._tracer = tracer
        self.span = span
        self._request = request
        self._done = False

    def inject(self, headers: list[Header]) -> list[Header]:
        """``headers`` with the caller's trace context replaced by this attempt's.

        Written directly in the W3C Trace Context format (version 00, the one the SDK's
        propagator writes too): a third of the propagator's cost on every attempt."""
        context = self.span.get_span_context()
        out = [h for h in headers if h[0] not in _TRACE_HEADERS]
        out.append(
            (
                b"traceparent",
                b"00-%032x-%016x-%02x" % (context.trace_id, context.span_id, context.trace_flags),
            )
        )
        if context.trace_state:
            out.append((b"tracestate", context.trace_state.to_header().encode("latin-1")))
        return out

    def _close(self) -> None:
        self._done = True
        request = self._request
        if request is not None:
            request.open.discard(self)
        self.span.end()

    def answered(self, status: int) -> None:
        """The upstream answered ``status`` in full (a stream ends in :meth:`wrap_finish`)."""
        if self._done:
            return
        span = self.span
        span.set_attribute("http.response.status_code", status)
        if status >= 400:  # a client span's 4xx is an error too (HTTP semconv)
            span.set_attribute("error.type", str(status))
            span.set_status(self._tracer._error)
        self._close()

    def fail(self, error: BaseException | None) -> None:
        """The attempt failed with ``error``, or was cancelled (a hedge that lost, a client
        that left); ``None``: its request ended while it was still open."""
        if self._done:  # a hedge that lost may unwind after its request ended
            return
        span = self.span
        if error is None or isinstance(error, asyncio.CancelledError | GeneratorExit):
            span.set_attribute("headway.cancelled", True)
        else:
            status = getattr(error, "status", None)
            if isinstance(status, int):
                span.set_attribute("http.response.status_code", status)
                kind = str(status)
            else:
                reason = getattr(error, "reason", None)
                kind = reason if isinstance(reason, str) else type(error).__qualname__
            span.set_attribute("error.type", kind)
            span.set_status(self._tracer._error)
        self._close()

    def wrap_finish(
        self, finish: Callable[[BaseException | None, bool], object]
    ) -> Callable[[BaseException | None, bool], None]:
        """A stream's outcome recorder that also ends this span when the stream ends."""
        self.span.add_event("first_chunk")
        self.span.set_attribute("http.response.status_code", 200)

        def finish_and_end(error: BaseException | None, cancelled: bool) -> None:
            finish(error, cancelled)
            if self._done:
                return
            if error is None and not cancelled:
                self._close()
            else:
                self.fail(error)

        return finish_and_end


class TracingHooks:
    """A :class:`headway.core.Hooks` passing guard events to the running request's trace."""

    __slots__ = ()

    def on_event(self, kind: str, name: str, event: str, value: float = 1.0) -> None:
        trace = _CURRENT.get()
        if trace is not None and trace.recording:
            trace.on_event(kind, name, event, value)
