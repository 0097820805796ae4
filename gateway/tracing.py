"""Optional OpenTelemetry spans: ingress ``receive → publish`` and worker ``consume → handler
→ state``, linked through the events' ``traceparent`` (contract §9).

On only with the extra installed (``pip install 'event-gateway[otel]'``) and the standard
variables asking for traces: ``OTEL_TRACES_EXPORTER`` (``otlp`` or ``console``) or an
``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``, and not ``OTEL_SDK_DISABLED=true``. The exporter,
endpoint, headers, sampler and service name then come from the usual ``OTEL_*`` variables.
Otherwise nothing of OpenTelemetry is imported, and the hot paths pay one ``is None`` check.

How the trace is carried: the ingress's ``receive`` span continues the request's W3C
``traceparent``, and each event without a ``traceparent`` of its own gets the ``receive``
span's (instead of the incoming header's), so a worker's ``consume`` span is its child. The
publish and its broker confirm are one call of the publisher, so they are one ``publish``
span, with a ``confirmed`` event when the broker confirmed every message.
"""

from __future__ import annotations

import atexit
import importlib
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, TypeVar

from gateway import __version__
from gateway.logs import get_logger

if TYPE_CHECKING:  # only for the type checker: never imported at run time unless enabled
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from consumers.event import Event

log = get_logger("gateway.tracing")

INSTRUMENTATION = "event-gateway"
T = TypeVar("T")

_provider: TracerProvider | None = None


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether the standard variables ask for traces."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def configure_tracing(environ: Mapping[str, str] | None = None) -> bool:
    """Set up tracing once per process from the ``OTEL_*`` variables; True when on."""
    environ = os.environ if environ is None else environ
    if not wanted(environ):
        return False
    try:
        provider = _sdk_provider(environ)
    except ImportError as exc:
        log.warning(
            "OTEL_* variables ask for traces but OpenTelemetry is not installed: "
            "pip install 'event-gateway[otel]'; tracing is off",
            error=str(exc),
        )
        return False
    from opentelemetry import trace

    trace.set_tracer_provider(provider)  # libraries that trace find it too
    atexit.register(provider.shutdown)  # flush the batch of spans not yet exported
    use_tracer_provider(provider)
    log.info("tracing on", exporter=environ.get("OTEL_TRACES_EXPORTER", "otlp"))
    return True


def _sdk_provider(environ: Mapping[str, str]) -> SdkTracerProvider:
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES over these.
    resource = Resource.create({SERVICE_NAME: INSTRUMENTATION, SERVICE_VERSION: __version__})
    provider = TracerProvider(resource=resource)  # OTEL_TRACES_SAMPLER is read here
    exporters: list[SpanExporter] = []
    for name in (environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(","):
        name = name.strip().lower()
        if name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            protocol = environ.get(
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            )
            # The extra brings the HTTP exporter; gRPC needs
            # opentelemetry-exporter-otlp-proto-grpc installed besides.
            transport = "grpc" if protocol == "grpc" else "http"
            module = importlib.import_module(
                f"opentelemetry.exporter.otlp.proto.{transport}.trace_exporter"
            )
            exporters.append(module.OTLPSpanExporter())  # reads OTEL_EXPORTER_OTLP_*
        elif name and name != "none":
            log.warning("unknown OTEL_TRACES_EXPORTER ignored", exporter=name)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def use_tracer_provider(provider: TracerProvider | None) -> None:
    """Use ``provider`` for the gateway's spans from now on (None: off). Tests pass one with
    an in-memory exporter."""
    global _provider  # set once per process at start, like logging
    _provider = provider


def ingress_tracing() -> IngressTracing | None:
    """The ingress's spans, or None when tracing is off."""
    return None if _provider is None else IngressTracing(_provider.get_tracer(INSTRUMENTATION))


def worker_tracing(queue: str) -> WorkerTracing | None:
    """A worker's spans, or None when tracing is off."""
    if _provider is None:
        return None
    return WorkerTracing(_provider.get_tracer(INSTRUMENTATION), queue)


def _traceparent(span: Span) -> tuple[str, str | None]:
    """The W3C header values that make ``span`` the parent of what follows."""
    context = span.get_span_context()
    parent = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    state = context.trace_state.to_header() if context.trace_state else None
    return parent, state or None


class IngressTracing:
    """``POST /callbacks/{source}`` as a SERVER span continuing the request's trace, and the
    publish (with its confirm) as a PRODUCER span inside it."""

    def __init__(self, tracer: Tracer) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._tracer = tracer
        self._trace = trace
        self._propagator = TraceContextTextMapPropagator()

    async def request(
        self, headers: Mapping[str, str], source: str, path: str, handle: Callable[[], Awaitable[T]]
    ) -> T:
        """Run ``handle()`` (which answers the request) inside the ``receive`` span."""
        from opentelemetry.trace import SpanKind, Status, StatusCode

        parent = self._propagator.extract(headers)
        with self._tracer.start_as_current_span(
            "POST /callbacks/{source}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": "POST",
                "url.path": path,
                "http.route": "/callbacks/{source}",
                "event_gateway.source": source,
            },
            record_exception=False,
            set_status_on_exception=True,
        ) as span:
            response = await handle()
            status = int(getattr(response, "status", 0))
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            return response

    def event_trace_context(self, _headers: Mapping[str, str]) -> tuple[str | None, str | None]:
        """The ``traceparent``/``tracestate`` the request's events get: the receive span's."""
        span = self._trace.get_current_span()
        if not span.get_span_context().is_valid:
            return None, None
        return _traceparent(span)

    async def publish(self, publishing: Awaitable[None], exchange: str, count: int) -> None:
        """Await the publish and its confirms inside a PRODUCER span."""
        from opentelemetry.trace import SpanKind

        with self._tracer.start_as_current_span(
            f"publish {exchange}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.operation.type": "send",
                "messaging.destination.name": exchange,
                "messaging.batch.message_count": count,
            },
        ) as span:
            await publishing
            span.add_event("confirmed")


class WorkerTracing:
    """Per event: a CONSUMER span that continues the event's ``traceparent``, with a
    ``handler`` span (the handler, or a built-in's planning) and a ``state`` span (the state
    write, shared by the events of a batch) inside it."""

    def __init__(self, tracer: Tracer, queue: str) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self._tracer = tracer
        self._trace = trace
        self._queue = queue
        self._propagator = TraceContextTextMapPropagator()

    def _consume(self, event: Event) -> Span:
        from opentelemetry.trace import SpanKind

        carrier = {
            name: value
            for name in ("traceparent", "tracestate")
            if isinstance(value := event.extensions.get(name), str)
        }
        return self._tracer.start_span(
            f"consume {self._queue}",
            context=self._propagator.extract(carrier),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.operation.type": "process",
                "messaging.destination.name": self._queue,
                "messaging.message.id": event.id,
                "cloudevents.event_id": event.id,
                "cloudevents.event_type": event.type,
                "cloudevents.event_source": event.source,
            },
        )

    async def handle(self, event: Event, handler: Callable[[Event], Awaitable[None]]) -> None:
        """One event through a handler: ``consume`` with ``handler`` inside; raises what the
        handler raised."""
        consume = self._consume(event)
        try:
            with (
                self._trace.use_span(consume, end_on_exit=False),
                self._tracer.start_as_current_span("handler"),
            ):
                await handler(event)
        except BaseException as exc:
            _failed(consume, exc)
            raise
        finally:
            consume.end()

    def batch(self) -> BatchTrace:
        """The spans of one batch of a built-in worker."""
        return BatchTrace(self)


class BatchTrace:
    """A built-in worker's batch: each event's ``consume`` span is opened while it is planned
    (``handler``), the one state write gets a ``state`` span in every event's trace, and
    ``finish`` ends them all."""

    def __init__(self, tracing: WorkerTracing) -> None:
        self._tracing = tracing
        self._open: list[Span] = []

    def plan(self, event: Event, planner: Callable[[Event], T]) -> T:
        """Plan one event inside its ``consume`` → ``handler`` spans."""
        consume = self._tracing._consume(event)
        tracer = self._tracing._tracer
        try:
            with (
                self._tracing._trace.use_span(consume, end_on_exit=False),
                tracer.start_as_current_span("handler"),
            ):
                planned = planner(event)
        except BaseException as exc:
            _failed(consume, exc)
            consume.end()  # retried or dead-lettered on its own
            raise
        self._open.append(consume)
        return planned

    async def state(self, writing: Awaitable[None], events: int) -> None:
        """Await the batch's state write inside a ``state`` span per open event."""
        trace, tracer = self._tracing._trace, self._tracing._tracer
        started = time.time_ns()
        spans = [
            tracer.start_span(
                "state",
                context=trace.set_span_in_context(consume),
                start_time=started,
                attributes={"event_gateway.batch_events": events},
            )
            for consume in self._open
        ]
        try:
            await writing
        except BaseException as exc:
            for span in spans:
                _failed(span, exc)
            raise
        finally:
            ended = time.time_ns()
            for span in spans:
                span.end(end_time=ended)

    def finish(self, error: BaseException | None = None) -> None:
        """End every ``consume`` span still open (after the acks, or on a failure)."""
        for consume in self._open:
            if error is not None:
                _failed(consume, error)
            consume.end()
        self._open.clear()


def _failed(span: Span, exc: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}"))


__all__ = [
    "BatchTrace",
    "IngressTracing",
    "WorkerTracing",
    "configure_tracing",
    "ingress_tracing",
    "use_tracer_provider",
    "wanted",
    "worker_tracing",
]
