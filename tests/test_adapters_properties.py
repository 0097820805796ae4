"""Properties of every adapter: any request either normalizes or raises AdapterError."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from gateway.adapters import ADAPTERS, AdapterError, Context
from gateway.adapters.camara import LEGACY_TYPES
from gateway.cloudevent import CloudEvent

CTX = Context("prop", "2026-03-01T12:00:00.000Z")
ADAPTER_NAMES = sorted(ADAPTERS)
PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
        "APPLICATION/CLOUDEVENTS+JSON; charset=x",
        "text/plain",
        "application/octet-stream",
        "application/vnd.x+json",
        "",
        ";",
    ]
)
HEADER_NAMES = st.sampled_from(
    [
        "Content-Type",
        "ce-specversion",
        "CE-ID",
        "ce-source",
        "ce-type",
        "ce-time",
        "ce-subject",
        "ce-partitionkey",
        "ce-data",
        "ce-",
        "Authorization",
    ]
) | st.text(max_size=12)
HEADER_VALUES = (
    CONTENT_TYPES
    | st.sampled_from(["1.0", "0.3", "", "%", "%FF", "%E2%82%AC", "a b", "2024-01-01T00:00:00Z"])
    | st.text(max_size=20)
)
JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
TIMES = st.sampled_from(
    ["2023-01-17T13:18:23.682Z", "2024-06-01T13:00:00.123456789+02:00", "2023-02-30T00:00:00Z", ""]
) | st.text(max_size=25)
MAYBE = st.none() | JSON_LEAVES
DEVICES = st.fixed_dictionaries(
    {},
    optional={
        "phoneNumber": st.sampled_from(["+123456789", "36701234567", ""]) | MAYBE,
        "networkAccessIdentifier": MAYBE,
        "ipv6Address": MAYBE,
        "ipv4Address": st.fixed_dictionaries({}, optional={"publicAddress": MAYBE}) | MAYBE,
    },
)
DATA = (
    st.fixed_dictionaries(
        {}, optional={"device": DEVICES | MAYBE, "sessionId": MAYBE, "subscriptionId": MAYBE}
    )
    | JSON_VALUES
)
CLOUDEVENTS = st.fixed_dictionaries(
    {},
    optional={
        "specversion": st.sampled_from(["1.0", "0.3"]) | MAYBE,
        "id": st.sampled_from(["evt-1", ""]) | MAYBE,
        "source": st.sampled_from(["/s", ""]) | MAYBE,
        "type": st.sampled_from(["com.example.t", "a b", "x" * 300]) | MAYBE,
        "time": TIMES | MAYBE,
        "subject": MAYBE,
        "partitionkey": MAYBE,
        "data": DATA,
        "data_base64": st.sampled_from(["AAECAwQFBgcICQ==", "!!"]) | MAYBE,
        "event": st.fixed_dictionaries(
            {},
            optional={
                "eventId": MAYBE,
                "eventType": st.sampled_from([*LEGACY_TYPES, "DEVICE_STATUS_CHANGED"]) | MAYBE,
                "eventTime": TIMES | MAYBE,
                "eventDetail": DATA | MAYBE,
            },
        )
        | MAYBE,
        "eventSubscriptionId": MAYBE,
    },
)
NOTIFY_BODIES = st.fixed_dictionaries(
    {},
    optional={
        "id": st.sampled_from(["740e5834-3a29-46b4-9a6f-16142fde533a", ""]) | MAYBE,
        "status": st.sampled_from(["delivered", "permanent-failure"]) | MAYBE,
        "notification_type": st.sampled_from(["email", "sms", "Email", "x y"]) | MAYBE,
        "created_at": TIMES | MAYBE,
        "completed_at": TIMES | MAYBE,
        "date_received": TIMES | MAYBE,
        "source_number": st.sampled_from(["+61412987654"]) | MAYBE,
    },
)
BODIES = (
    st.binary(max_size=200)
    | JSON_VALUES.map(orjson.dumps)
    | CLOUDEVENTS.map(orjson.dumps)
    | st.lists(CLOUDEVENTS, max_size=3).map(orjson.dumps)
    | NOTIFY_BODIES.map(orjson.dumps)
)
HEADERS = st.builds(
    lambda content_type, pairs: [*content_type, *pairs],
    st.lists(st.tuples(st.just("Content-Type"), CONTENT_TYPES), max_size=1),
    st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=8),
)
BINARY_HEADERS = st.fixed_dictionaries(
    {
        "ce-specversion": st.sampled_from(["1.0", "1.0", "0.3"]),
        "ce-id": st.sampled_from(["b-1", "b%20%E2%82%AC", "%FF"]) | st.text(max_size=8),
        "ce-source": st.sampled_from(["/s"]) | st.text(max_size=8),
        "ce-type": st.sampled_from(["com.example.t"]) | st.text(max_size=8),
    },
    optional={
        "Content-Type": CONTENT_TYPES,
        "ce-time": TIMES,
        "ce-partitionkey": st.text(max_size=8),
        "ce-comexampleextension1": HEADER_VALUES,
    },
)


def check_event(event: CloudEvent) -> None:
    """An event the gateway can publish: required attributes, gateway stamps, serializable."""
    assert event["specversion"] == "1.0"
    for name in ("id", "source", "type"):
        assert isinstance(event[name], str)
        assert event[name]
    assert len(event["type"].encode()) <= 255
    assert not any(character.isspace() for character in event["type"])
    assert event["gatewaysource"] == "prop"
    assert event["gatewayreceived"] == CTX.received
    assert not ("data" in event and "data_base64" in event)
    orjson.dumps(event)


def outcome(
    adapter: str, pairs: list[tuple[str, str]], body: bytes
) -> list[CloudEvent] | AdapterError:
    """The events, or the AdapterError raised (any other exception propagates)."""
    try:
        return ADAPTERS[adapter](CIMultiDict(pairs), body, CTX)
    except AdapterError as error:
        return error


def run(adapter: str, pairs: list[tuple[str, str]], body: bytes) -> list[CloudEvent] | None:
    """Normalize and check the result; None for a well-formed AdapterError."""
    result = outcome(adapter, pairs, body)
    if isinstance(result, AdapterError):
        assert result.status in (400, 415)
        assert isinstance(result.detail, str)
        assert result.detail
        return None
    assert isinstance(result, list)
    for event in result:
        check_event(event)
    return result


@pytest.mark.parametrize("adapter", ADAPTER_NAMES)
@PROPERTY_SETTINGS
@given(pairs=HEADERS, body=BODIES)
def test_any_request_normalizes_or_raises_adapter_error(
    adapter: str, pairs: list[tuple[str, str]], body: bytes
) -> None:
    """Arbitrary headers and bytes never escape as anything but AdapterError."""
    run(adapter, pairs, body)


@pytest.mark.parametrize("adapter", ADAPTER_NAMES)
@PROPERTY_SETTINGS
@given(content_type=CONTENT_TYPES, body=BODIES)
def test_same_request_always_gives_the_same_events(
    adapter: str, content_type: str, body: bytes
) -> None:
    """Normalizing is a function of the request: the same callback keeps its ids."""
    pairs = [("Content-Type", content_type)]
    assert run(adapter, pairs, body) == run(adapter, pairs, body)


@pytest.mark.parametrize("adapter", ["camara", "cloudevents"])
@PROPERTY_SETTINGS
@given(
    events=st.lists(CLOUDEVENTS, max_size=3),
    batch=st.booleans(),
)
def test_structured_and_batch_events_normalize_or_name_a_field(
    adapter: str, events: list[dict[str, Any]], batch: bool
) -> None:
    """Generated CloudEvents, alone or batched, normalize or fail with a 400 naming a field."""
    if batch:
        content_type, body = "application/cloudevents-batch+json", orjson.dumps(events)
    elif events:
        content_type, body = "application/cloudevents+json", orjson.dumps(events[0])
    else:
        return
    produced = outcome(adapter, [("Content-Type", content_type)], body)
    if isinstance(produced, AdapterError):
        assert produced.status == 400
        assert produced.field
        return
    assert len(produced) == (len(events) if batch else 1)
    for event in produced:
        check_event(event)


@pytest.mark.parametrize("adapter", ["camara", "cloudevents"])
@PROPERTY_SETTINGS
@given(binary_headers=BINARY_HEADERS, body=BODIES)
def test_binary_mode_normalizes_or_raises_adapter_error(
    adapter: str, binary_headers: dict[str, str], body: bytes
) -> None:
    """Binary-mode requests with arbitrary attribute values and bodies never escape otherwise."""
    run(adapter, list(binary_headers.items()), body)


@PROPERTY_SETTINGS
@given(event=CLOUDEVENTS, content_type=st.sampled_from(["application/json", None]))
def test_camara_json_bodies_normalize_or_name_a_field_or_the_body(
    event: dict[str, Any], content_type: str | None
) -> None:
    """camara JSON bodies either normalize or fail with a 400 that names a field or the body."""
    pairs = [] if content_type is None else [("Content-Type", content_type)]
    events = outcome("camara", pairs, orjson.dumps(event))
    if isinstance(events, AdapterError):
        assert events.status == 400
        assert events.field
        return
    for produced in events:
        check_event(produced)
        assert "event" not in produced
        assert "eventSubscriptionId" not in produced
