"""Tracing (§9): the request's W3C trace context reaches every event and its AMQP headers, and
with OpenTelemetry configured one trace runs from the HTTP request to the worker's state write.
Nothing of OpenTelemetry is imported unless it is asked for."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from consumers.handlers import builtin_spec
from consumers.state import open_store
from gateway.adapters import ADAPTERS, Context
from gateway.amqp_message import ce_headers, header_frame_size, to_outgoing
from gateway.settings import StateSettings
from gateway.trace_context import incoming_trace_context, valid_traceparent
from gateway.tracing import use_tracer_provider, wanted
from tests.broker import drain
from tests.conftest import FIXTURES, Ingress, IngressFactory
from tests.worker_support import eventually, running_worker, sqlite_url

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
OWN_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
ROAMING_EVENT = FIXTURES / "camara-roaming-status.json"


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (TRACEPARENT, True),
        ("00-" + "0" * 32 + "-00f067aa0ba902b7-01", False),  # all-zero trace id
        (f"00-{TRACE_ID}-" + "0" * 16 + "-01", False),  # all-zero parent id
        (f"ff-{TRACE_ID}-00f067aa0ba902b7-01", False),  # version ff is invalid
        (TRACEPARENT.upper(), False),  # hex is lower case
        (TRACEPARENT[:-1], False),
        (TRACEPARENT + "-extra", False),
        ("", False),
    ],
)
def test_traceparent_shape(value: str, valid: bool) -> None:
    """Only a well-formed W3C traceparent is taken."""
    assert valid_traceparent(value) is valid


def test_incoming_trace_context_ignores_what_is_malformed() -> None:
    """A bad traceparent drops both headers; a bad tracestate drops only itself."""
    assert incoming_trace_context({}) == (None, None)
    assert incoming_trace_context(
        {"traceparent": f" {TRACEPARENT} ", "tracestate": TRACESTATE}
    ) == (
        TRACEPARENT,
        TRACESTATE,
    )
    assert incoming_trace_context({"traceparent": "nonsense", "tracestate": TRACESTATE}) == (
        None,
        None,
    )
    assert incoming_trace_context({"traceparent": TRACEPARENT, "tracestate": "x" * 600}) == (
        TRACEPARENT,
        None,
    )
    assert incoming_trace_context({"traceparent": TRACEPARENT, "tracestate": "a=\x01"}) == (
        TRACEPARENT,
        None,
    )


def normalize(adapter: str, body: bytes, content_type: str) -> list[dict[str, object]]:
    ctx = Context("src", "2026-11-30T12:00:00.000Z", traceparent=TRACEPARENT, tracestate=TRACESTATE)
    return ADAPTERS[adapter]({"Content-Type": content_type}, body, ctx)


def test_every_event_without_its_own_gets_the_request_trace_context() -> None:
    """Each event of a batch gets the request's traceparent and tracestate, except one that
    carries its own traceparent (it keeps it, and no tracestate is added to it)."""
    event = json.loads(ROAMING_EVENT.read_text(encoding="utf-8"))
    batch = [
        {**event, "id": "1"},
        {**event, "id": "2", "traceparent": OWN_TRACEPARENT},
        {**event, "id": "3"},
    ]
    events = normalize("cloudevents", orjson.dumps(batch), "application/cloudevents-batch+json")
    assert [(e["traceparent"], e.get("tracestate")) for e in events] == [
        (TRACEPARENT, TRACESTATE),
        (OWN_TRACEPARENT, None),
        (TRACEPARENT, TRACESTATE),
    ]


def test_notify_events_get_the_trace_context_too() -> None:
    """The Notify adapters stamp the same attributes."""
    body = (FIXTURES / "notify-inbound-sms.json").read_bytes()
    (event,) = normalize("notify-inbound-sms", body, "application/json")
    assert event["traceparent"] == TRACEPARENT
    assert event["tracestate"] == TRACESTATE


def test_trace_context_becomes_amqp_headers_under_w3c_names() -> None:
    """The AMQP message carries `traceparent`/`tracestate` headers (counted in the frame)."""
    (event,) = normalize("camara", ROAMING_EVENT.read_bytes(), "application/cloudevents+json")
    headers = ce_headers(event)
    assert headers["traceparent"] == TRACEPARENT
    assert headers["tracestate"] == TRACESTATE
    outgoing = to_outgoing("events", event)
    assert b"traceparent" in outgoing.headers
    assert TRACESTATE.encode() in outgoing.headers
    without = {k: v for k, v in event.items() if k not in ("traceparent", "tracestate")}
    grown = header_frame_size(event) - header_frame_size(without)
    assert grown == len(outgoing.headers) - len(to_outgoing("events", without).headers)


async def test_ingress_passes_the_request_trace_context_on_without_otel(
    ingress: Ingress,
) -> None:
    """Without OpenTelemetry, the published event and its AMQP headers carry the request's
    traceparent and tracestate unchanged."""
    status, _ = await ingress.post(
        "camara",
        ROAMING_EVENT.read_bytes(),
        "application/cloudevents+json",
        traceparent=TRACEPARENT,
        tracestate=TRACESTATE,
    )
    assert status == 204
    [message] = await drain(ingress.channel, ingress.capture, 1)
    body = orjson.loads(message.body)
    assert (body["traceparent"], body["tracestate"]) == (TRACEPARENT, TRACESTATE)
    headers = message.headers or {}
    assert (headers["traceparent"], headers["tracestate"]) == (TRACEPARENT, TRACESTATE)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """OpenTelemetry on, spans kept in memory, for the apps and workers built in the test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    use_tracer_provider(provider)
    try:
        yield exporter
    finally:
        use_tracer_provider(None)
        provider.shutdown()


def named(spans: tuple[ReadableSpan, ...], prefix: str) -> ReadableSpan:
    found = [span for span in spans if span.name.startswith(prefix)]
    assert len(found) == 1, [span.name for span in spans]
    return found[0]


async def test_one_trace_from_the_request_to_the_state_write(
    make_ingress: IngressFactory, spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    """With OpenTelemetry: receive (server, continuing the request's traceparent) → publish
    (producer, confirmed) and receive → consume (consumer) → handler and state, all in the
    request's trace; the event carries the receive span as its traceparent."""
    ingress = await make_ingress()
    settings = replace(ingress.settings, state=StateSettings(url=sqlite_url(tmp_path)))
    spec = builtin_spec(settings.amqp, "roaming")
    async with running_worker(settings, spec):
        status, _ = await ingress.post(
            "camara",
            ROAMING_EVENT.read_bytes(),
            "application/cloudevents+json",
            traceparent=TRACEPARENT,
            tracestate=TRACESTATE,
        )
        assert status == 204

        def state_written() -> bool:
            return any(span.name == "state" for span in spans.get_finished_spans())

        await eventually(state_written, what="the worker's state span")
    finished = spans.get_finished_spans()
    receive = named(finished, "POST /callbacks")
    publish = named(finished, "publish ")
    consume = named(finished, "consume ")
    handler = named(finished, "handler")
    state = named(finished, "state")
    assert {span.context.trace_id for span in finished} == {int(TRACE_ID, 16)}
    assert receive.kind is SpanKind.SERVER
    assert receive.parent is not None
    assert receive.parent.span_id == int(TRACEPARENT.split("-")[2], 16)
    assert receive.attributes is not None
    assert receive.attributes["http.response.status_code"] == 204
    assert publish.kind is SpanKind.PRODUCER
    assert publish.parent is not None
    assert publish.parent.span_id == receive.context.span_id
    assert [event.name for event in publish.events] == ["confirmed"]
    assert consume.kind is SpanKind.CONSUMER
    assert consume.parent is not None
    assert consume.parent.span_id == receive.context.span_id
    assert handler.parent is not None
    assert handler.parent.span_id == consume.context.span_id
    assert state.parent is not None
    assert state.parent.span_id == consume.context.span_id
    assert str(receive.context.trace_state.to_header()) == TRACESTATE
    store = await open_store(settings.state.url)
    try:
        device = await store.device("+123456789")
    finally:
        await store.close()
    assert device is not None
    assert device["roaming"] is True


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "gw"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_which_variables_turn_tracing_on(environ: dict[str, str], on: bool) -> None:
    """Traces only when an exporter or endpoint is asked for and the SDK is not disabled."""
    assert wanted(environ) is on


# Runs in a fresh interpreter: builds the ingress app and a worker, configures tracing from
# the given environment, then prints which opentelemetry modules got imported.
_PROBE = """
import json, sys
BLOCK = {block!r}
if BLOCK:
    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ModuleNotFoundError(name)
            return None
    sys.meta_path.insert(0, Blocker())
from gateway.logs import configure_logging
configure_logging("json")
from gateway.tracing import configure_tracing
on = configure_tracing({environ!r})
from consumers.handlers import builtin_spec
from consumers.worker import Worker
from gateway.app import create_app
from gateway.settings import Settings
settings = Settings()
create_app(settings)
Worker(settings, builtin_spec(settings.amqp, "roaming"))
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
print(json.dumps({{"on": on, "loaded": loaded}}))
"""


def probe(environ: dict[str, str], *, block: bool = False) -> tuple[dict[str, object], str]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(environ=environ, block=block)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    *logs, last = result.stdout.strip().splitlines()
    outcome: dict[str, object] = json.loads(last)
    return outcome, "\n".join(logs)


def test_nothing_of_opentelemetry_is_imported_when_not_asked_for() -> None:
    """Without OTEL_* variables the ingress and a worker are built with no opentelemetry
    module loaded, though the SDK is installed."""
    outcome, _ = probe({})
    assert outcome == {"on": False, "loaded": []}


def test_asked_for_but_not_installed_is_a_warning_not_a_failure() -> None:
    """OTEL_* set without the otel extra: one warning line, tracing off, nothing imported."""
    outcome, logs = probe({"OTEL_TRACES_EXPORTER": "console"}, block=True)
    assert outcome == {"on": False, "loaded": []}
    assert "event-gateway[otel]" in logs


def test_asked_for_and_installed_turns_tracing_on() -> None:
    """OTEL_TRACES_EXPORTER=console with the SDK installed: tracing on."""
    outcome, logs = probe({"OTEL_TRACES_EXPORTER": "console"})
    assert outcome["on"] is True
    assert "tracing on" in logs
