"""W3C trace context through the fleet, and OpenTelemetry spans when configured.

Without anything configured, a ``traceparent`` travels as it came: a caller that sets
``bus.deadline.traceparent`` (or sends the header, e.g. from an HTTP gateway) has it on its ask,
and the router's handler passes it on to every call it makes (cache, cost, each provider call,
the supervisor): ``bus.endpoint`` sets it per handler task, ``bus.deadline.headers_for`` sends it.
Nothing is added when there is none (DESIGN §3: headers cost real time in nats-py).

With ``[tracing] otlp_endpoint`` (and the ``otel`` extra: ``pip install 'llmbus[otel]'``) every
handled request is a span (kind SERVER, name ``llmbus <endpoint>``, attributes subject, ask id,
outcome), child of the caller's traceparent; the handler's own requests carry the span's context,
so the router's ask, its provider calls and the providers' work are one trace in Jaeger or Tempo.
An ask with no traceparent starts a new trace at the router. ``install(provider)`` takes any
``TracerProvider`` (the tests pass one with the SDK's in-memory exporter).
"""

from __future__ import annotations

from typing import Any

import structlog

from bus import endpoint
from bus.deadline import TRACE_HEADER, traceparent

log = structlog.get_logger("llmbus.tracing")


def configure(settings) -> bool:
    """Export spans over OTLP/HTTP as ``settings`` (``TracingSettings``) says; False when off or the
    ``otel`` extra is missing (said once in the log)."""
    if not settings.otlp_endpoint:
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("tracing_unavailable", otlp_endpoint=settings.otlp_endpoint,
                    hint="pip install 'llmbus[otel]' (opentelemetry-sdk and the OTLP exporter)")
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint)))
    install(provider)
    return True


def install(provider: Any) -> None:
    """Every endpoint of this process makes its spans with ``provider``'s tracer."""
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    tracer = provider.get_tracer("llmbus")
    propagator = TraceContextTextMapPropagator()

    def start(name: str, ctx: endpoint.Context):
        parent = propagator.extract(ctx.headers) if ctx.headers and TRACE_HEADER in ctx.headers else None
        span = tracer.start_span(f"llmbus {name}", context=parent, kind=SpanKind.SERVER,
                                 attributes={"llmbus.subject": ctx.subject, "llmbus.ask_id": ctx.ask_id or ""})
        carrier: dict[str, str] = {}
        propagator.inject(carrier, context=trace.set_span_in_context(span))
        if TRACE_HEADER in carrier:
            traceparent.set(carrier[TRACE_HEADER])

        def finish(result: Any) -> None:
            kind = getattr(result, "kind", None) if result.__class__.__name__ == "Failure" else None
            if result is None:
                span.set_status(Status(StatusCode.ERROR, "stopped"))
            elif kind is not None:
                span.set_attribute("llmbus.outcome", kind)
                span.set_status(Status(StatusCode.ERROR, f"{kind}: {getattr(result, 'message', '')}"[:200]))
            else:
                span.set_attribute("llmbus.outcome", "ok")
            span.end()

        return finish

    endpoint.SPANS = start


def uninstall() -> None:
    endpoint.SPANS = None
