"""Attribute limits and types (contract §7), per adapter, without a broker: each a 400 naming
the field, or 413 for too many events; and the AMQP side of them (message id, frame size)."""

from __future__ import annotations

import hashlib
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from gateway.adapters import ADAPTERS, AdapterError, BadRequest, Context
from gateway.adapters.attributes import MAX_ATTRIBUTES
from gateway.adapters.errors import TooManyEvents
from gateway.adapters.frame import ALWAYS_FITS
from gateway.amqp_message import (
    APP_ID,
    PERSISTENT,
    amqp_message_id,
    header_frame_size,
    to_message,
    to_outgoing,
)
from gateway.amqp_wire import PublishEncoder
from gateway.cloudevent import CloudEvent
from tests.adapter_support import RECEIVED, fixture, headers

KB140 = "x" * 140_000
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
RECEIVED_AT = datetime(2026, 3, 1, 12, tzinfo=UTC)
CTX = Context("partner", RECEIVED)


def event(**changes: Any) -> dict[str, Any]:
    """A minimal valid CloudEvent with some members changed (None: removed)."""
    base: dict[str, Any] = {
        "specversion": "1.0",
        "id": "e-1",
        "source": "/partner",
        "type": "com.example.thing",
        "time": "2026-03-01T11:00:00Z",
    }
    base.update(changes)
    return base


def send(
    body: Any, content_type: str = STRUCTURED, ctx: Context = CTX, adapter: str = "cloudevents"
) -> list[CloudEvent]:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return ADAPTERS[adapter](headers(content_type), raw, ctx)


def refused(
    body: Any, content_type: str = STRUCTURED, ctx: Context = CTX, adapter: str = "cloudevents"
) -> AdapterError:
    with pytest.raises(AdapterError) as info:
        send(body, content_type, ctx, adapter)
    return info.value


def binary(*pairs: tuple[str, str], body: bytes = b"{}") -> list[CloudEvent]:
    base = (("ce-specversion", "1.0"), ("ce-id", "b-1"), ("ce-source", "/s"), ("ce-type", "t.x"))
    request: CIMultiDict[str] = headers("application/json", *base, *pairs)
    return ADAPTERS["cloudevents"](request, body, CTX)


# The attack of issue 8: 140 KB where a header value goes, in every place it can come from.


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (event(source=KB140), "source"),
        (event(partitionkey=KB140), "partitionkey"),
        (event(time="2026-03-01T11:00:00." + "1" * 140_000 + "Z"), "time"),
        (event(subject=KB140), "subject"),
        (event(comexampleext=KB140), "comexampleext"),
        (event(data={"device": {"networkAccessIdentifier": KB140}}), "partitionkey"),
    ],
)
@pytest.mark.parametrize("adapter", ["cloudevents", "camara"])
def test_140_kb_attribute_is_400_naming_it(adapter: str, body: dict[str, Any], field: str) -> None:
    """A 140 KB attribute (sent, or derived from data) is a 400 on that field, not a publish."""
    error = refused(body, adapter=adapter)
    assert (error.status, error.field) == (400, field)


def test_140_kb_attribute_in_a_batch_names_the_event() -> None:
    """In a batch the field says which event: ``[1].source``."""
    error = refused([event(), event(id="e-2", source=KB140)], BATCH)
    assert error.field == "[1].source"


@pytest.mark.parametrize(
    ("name", "size", "ok"),
    [
        ("id", 1024, True),
        ("id", 1025, False),
        ("type", 255, True),
        ("type", 256, False),
        ("source", 4096, True),
        ("source", 4097, False),
        ("subject", 4097, False),
        ("dataschema", 4097, False),
        ("partitionkey", 4097, False),
        ("comexampleext", 4096, True),
        ("comexampleext", 4097, False),
    ],
)
def test_size_limits_in_bytes(name: str, size: int, ok: bool) -> None:
    """id 1024 bytes, type 255, every other attribute 4096: at the limit fine, past it 400."""
    body = event(**{name: "é" * (size // 2) + "a" * (size % 2)})  # 2 bytes per é
    if ok:
        assert send(body)[0][name] == body[name]
    else:
        assert refused(body).field == name


def test_at_most_64_attributes() -> None:
    """64 attributes (the gateway's own not counted) are fine; a 65th is a 400."""
    extensions = {f"ext{n}": "v" for n in range(MAX_ATTRIBUTES - len(event()))}
    assert send(event(**extensions))
    error = refused(event(**extensions, extra="v"))
    assert error.status == 400
    assert "64 attributes" in error.detail


@pytest.mark.parametrize(
    "name", ["comExample", "com_example", "com.example", "é", "x" * 65, "a\x01b"]
)
def test_extension_names_are_lower_case_letters_and_digits(name: str) -> None:
    """An extension name other than a-z/0-9 (or absurdly long) is a 400 naming it."""
    error = refused(event(**{name: "v"}))
    assert error.status == 400
    assert error.field == name[:64]


def test_binary_mode_header_with_a_dash_is_no_attribute_name() -> None:
    """``ce-foo-bar`` would be the attribute ``foo-bar``: a 400."""
    with pytest.raises(BadRequest) as info:
        binary(("ce-foo-bar", "v"))
    assert info.value.field == "foo-bar"


@pytest.mark.parametrize(
    "changes",
    [
        {"source": 5},
        {"subject": 5},
        {"subject": {"a": 1}},
        {"partitionkey": 36721601234567},
        {"datacontenttype": ["application/json"]},
        {"dataschema": True},
        {"time": 1673961503},
        {"comexampleext": {"a": 1}},
        {"comexampleext": [1]},
        {"comexampleext": 1.5},
        {"comexampleext": 2**31},
        {"comexampleext": -(2**31) - 1},
    ],
)
def test_values_have_their_cloudevents_types(changes: dict[str, Any]) -> None:
    """A number, object or list where a string belongs, or an extension that is no String,
    Integer (32-bit) or Boolean, is a 400 naming it."""
    error = refused(event(**changes))
    assert (error.status, error.field) == (400, next(iter(changes)))


def test_integer_and_boolean_extensions_and_numeric_id_are_fine() -> None:
    """Integer and Boolean extensions pass as sent; a numeric id becomes its decimal string;
    a null attribute is absent."""
    [sent] = send(event(id=42, sequence=2**31 - 1, sampled=False, subject=None))
    assert (sent["id"], sent["sequence"], sent["sampled"]) == ("42", 2**31 - 1, False)
    assert "subject" not in sent


@pytest.mark.parametrize("value", ["a\x00b", "a\x01b", "a\nb", "a\x7fb", "a\x85b", "a\ufffeb"])
@pytest.mark.parametrize("name", ["source", "subject", "partitionkey", "id", "comexampleext"])
def test_control_characters_are_refused_in_attributes(name: str, value: str) -> None:
    """CloudEvents Strings hold no control characters or noncharacters: 400 naming the field."""
    error = refused(event(**{name: value}))
    assert error.status == 400
    # U+0000 is caught before the attribute checks, by where it is in the body.
    assert error.field == name


def test_printable_non_ascii_passes() -> None:
    """Non-ASCII text, spaces of other kinds and format characters are fine in a String."""
    subject = "Zürich\u00a0östra \u200d 電話 🙂"
    assert send(event(subject=subject))[0]["subject"] == subject


@pytest.mark.parametrize(
    ("body", "adapter", "field"),
    [
        (
            event(data={"device": {"phoneNumber": "+3670\u00001234"}}),
            "camara",
            "data.device.phoneNumber",
        ),
        (event(data={"subscriptionId": "s\u0000"}), "camara", "data.subscriptionId"),
        (event(data={"list": ["ok", "n\u0000"]}), "cloudevents", "data.list[1]"),
        (event(data={"k\u0000": 1}), "cloudevents", "data"),
        (
            fixture("notify-inbound-sms.json", source_number="+4477\u0000"),
            "notify-inbound-sms",
            "source_number",
        ),
        (fixture("notify-inbound-sms.json", id="m\u00001"), "notify-inbound-sms", "id"),
        (
            fixture("notify-delivery-email-delivered.json", id="n\u00001"),
            "notify-delivery-status",
            "id",
        ),
    ],
)
def test_nul_anywhere_in_a_json_body_is_refused(
    body: dict[str, Any], adapter: str, field: str
) -> None:
    """U+0000 cannot be stored (PostgreSQL text and jsonb): 400 naming where it is."""
    content_type = "application/json" if adapter.startswith("notify") else STRUCTURED
    error = refused(body, content_type, adapter=adapter)
    assert (error.status, error.field) == (400, field)


def test_nul_in_binary_mode_data_names_the_data_path() -> None:
    """Binary mode: the body is ``data``, so the path starts there."""
    with pytest.raises(BadRequest) as info:
        binary(body=b'{"a": "x\\u0000"}')
    assert info.value.field == "data.a"


def test_an_escaped_backslash_before_u0000_is_no_nul() -> None:
    """``\\\\u0000`` in JSON is a backslash and ``u0000``: fine."""
    [sent] = send(event(data={"text": "\\u0000"}))
    assert sent["data"] == {"text": "\\u0000"}


@pytest.mark.parametrize(
    "time",
    [
        "2026-03-01T11:00:00.1234567891Z",  # 10 fraction digits
        "2026-03-01T11:00:00.1234567891+01:00",
        "9999-12-31T23:00:00-05:00",  # past year 9999 in UTC
        "0001-01-01T00:30:00+01:00",  # before year 1 in UTC
        "0000-06-01T00:00:00Z",
        "2026-03-01T11:00:00",
        "2026-13-01T11:00:00Z",
    ],
)
def test_time_out_of_range_or_shape_is_400(time: str) -> None:
    """time: RFC 3339, years 0001 to 9999 also in UTC, at most 9 fraction digits."""
    ctx = Context("partner", RECEIVED, max_future_skew_s=1e12)
    assert refused(event(time=time), ctx=ctx).field == "time"


@pytest.mark.parametrize(
    "time",
    ["2026-03-01T11:00:00.123456789Z", "2026-03-01t06:00:00.5-05:00", "0001-01-01T00:00:00Z"],
)
def test_time_within_the_rules_passes(time: str) -> None:
    """Nine fraction digits, lower-case separators and year 1 in UTC are fine."""
    assert send(event(time=time))[0]["time"] == time


def test_year_9999_passes_with_a_large_enough_skew() -> None:
    """9999-12-31T23:59:59Z is a valid time; only the source's skew keeps it out by default."""
    ctx = Context("partner", RECEIVED, max_future_skew_s=1e12)
    assert send(event(time="9999-12-31T23:59:59Z"), ctx=ctx)
    assert refused(event(time="9999-12-31T23:59:59Z")).field == "time"


@pytest.mark.parametrize(("ahead_s", "ok"), [(299, True), (300, True), (301, False)])
def test_future_skew(ahead_s: int, ok: bool) -> None:
    """An event time more than max_future_skew_s after the receive time is a 400 on time."""
    ctx = Context("partner", RECEIVED, received_at=RECEIVED_AT)
    time = (RECEIVED_AT + timedelta(seconds=ahead_s)).isoformat()
    if ok:
        assert send(event(time=time), ctx=ctx)
    else:
        assert refused(event(time=time), ctx=ctx).field == "time"


def test_future_skew_is_per_source() -> None:
    """A source with max_future_skew_s = 0 refuses a time one second ahead; offsets count."""
    ctx = Context("partner", RECEIVED, max_future_skew_s=0)
    assert refused(event(time="2026-03-01T13:00:01+01:00"), ctx=ctx).field == "time"
    assert send(event(time="2026-03-01T13:00:00+01:00"), ctx=ctx)


def test_future_skew_applies_to_notify_times() -> None:
    """A Notify receipt completed an hour after it arrived is a 400 on time."""
    receipt = fixture("notify-delivery-email-delivered.json", completed_at="2026-03-01T13:00:00Z")
    error = refused(receipt, "application/json", adapter="notify-delivery-status")
    assert error.field == "time"


def test_batch_over_max_events_is_413() -> None:
    """max_events_per_request events are fine; one more is a 413."""
    ctx = Context("partner", RECEIVED, max_events=3)
    assert len(send([event(id=str(n)) for n in range(3)], BATCH, ctx)) == 3
    error = refused([event(id=str(n)) for n in range(4)], BATCH, ctx)
    assert isinstance(error, TooManyEvents)
    assert error.status == 413


def test_camara_batch_over_max_events_is_413() -> None:
    """The camara adapter reads batches through the same path: 413 too."""
    ctx = Context("camara", RECEIVED, max_events=1)
    assert refused([event(), event(id="2")], BATCH, ctx, adapter="camara").status == 413


# The AMQP side: message id and header frame.


def test_long_id_gets_a_digest_message_id_and_keeps_ce_id_whole() -> None:
    """An id over 255 bytes: message_id is sha256:<hex>; ce-id and the body keep it whole."""
    identifier = "é" * 200  # 400 bytes
    [sent] = send(event(id=identifier))
    digest = "sha256:" + hashlib.sha256(identifier.encode()).hexdigest()
    outgoing = to_outgoing("events", sent)
    assert outgoing.message_id == digest
    assert orjson.loads(outgoing.body)["id"] == identifier
    assert identifier.encode() in outgoing.headers
    message = to_message(sent, RECEIVED_AT)
    assert message.message_id == digest
    assert message.headers["ce-id"] == identifier


@pytest.mark.parametrize("identifier", ["i" * 255, "é" * 127, "1"])
def test_id_up_to_255_bytes_is_its_own_message_id(identifier: str) -> None:
    """Short ids are the message id as they are."""
    assert amqp_message_id(identifier) == identifier


def test_header_over_the_frame_size_is_400_naming_the_largest_attribute() -> None:
    """With a broker frame size of 4096, 3 KB source and 2 KB subject... the header frame does
    not fit: 400 on the largest header attribute; RabbitMQ's default fits anything valid."""
    body = event(source="s" * 3000, partitionkey="p" * 2000)
    error = refused(body, ctx=Context("partner", RECEIVED, frame_max=4096))
    assert (error.status, error.field) == (400, "source")
    assert send(body, ctx=Context("partner", RECEIVED, frame_max=131072))
    assert send(body, ctx=Context("partner", RECEIVED, frame_max=0))  # 0: no limit
    assert ALWAYS_FITS < 131072


TEXT = st.text(st.characters(codec="utf-8"), max_size=300)


@settings(max_examples=200, deadline=None)
@given(
    identifier=st.text(st.characters(codec="utf-8"), min_size=1, max_size=400),
    source=TEXT,
    time=st.none() | st.just("2026-03-01T11:00:00.123456789+01:00"),
    partitionkey=st.none() | TEXT,
)
def test_header_frame_size_is_the_encoded_size(
    identifier: str, source: str, time: str | None, partitionkey: str | None
) -> None:
    """header_frame_size is exactly the content header frame PublishEncoder writes."""
    sent: CloudEvent = {"id": identifier, "source": source, "type": "t", "specversion": "1.0"}
    if time is not None:
        sent["time"] = time
    if partitionkey is not None:
        sent["partitionkey"] = partitionkey
    encoder = PublishEncoder(1, 131064, delivery_mode=PERSISTENT, app_id=APP_ID)
    frames = encoder.encode(to_outgoing("events", sent), 0)
    (method_size,) = struct.unpack(">I", frames[3:7])
    start = 7 + method_size + 1
    assert frames[start] == 2  # the content header frame
    (header_size,) = struct.unpack(">I", frames[start + 3 : start + 7])
    assert header_frame_size(sent) == 7 + header_size + 1


def test_control_character_in_a_device_identifier_is_400_on_partitionkey() -> None:
    """A device identifier the key comes from must be a storable String too."""
    body = event(data={"device": {"networkAccessIdentifier": "dev\x01@example.com"}})
    assert refused(body, adapter="camara").field == "partitionkey"
