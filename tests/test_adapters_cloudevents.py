"""The ``cloudevents`` adapter: structured, batch and binary mode, and CloudEvent validation."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from multidict import CIMultiDict

from gateway.adapters import ADAPTERS, AdapterError, BadRequest, Context, UnsupportedMediaType
from gateway.adapters.cloudevents import normalize
from gateway.cloudevent import CloudEvent
from tests.adapter_support import FIXTURES, RECEIVED, fixture
from tests.adapter_support import headers as base_headers

CTX = Context("partner-events", RECEIVED)
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
GATEWAY = {"gatewaysource": "partner-events", "gatewayreceived": RECEIVED}
CAMARA_FIXTURES = sorted(path.name for path in FIXTURES.glob("camara-*.json"))
# Every camara fixture is keyed by +123456789 except these.
PARTITION_KEYS = {
    "camara-legacy-device-status-connectivity-data.json": "+123456787",
    "camara-qod-status-changed.json": "123e4567-e89b-12d3-a456-426614174000",
}

# cloudevents/spec v1.0.2 formats/json-format.md §3.2 (C234): has "subject": null.
SPEC_OBJECT_EVENT: dict[str, Any] = {
    "specversion": "1.0",
    "type": "com.example.someevent",
    "source": "/mycontext",
    "subject": None,
    "id": "C234-1234-1234",
    "time": "2018-04-05T17:31:00Z",
    "comexampleextension1": "value",
    "comexampleothervalue": 5,
    "datacontenttype": "application/json",
    "data": {"appinfoA": "abc", "appinfoB": 123, "appinfoC": True},
}
# json-format.md §4.3, the data_base64 placeholder replaced by a valid Base64 string.
SPEC_BATCH: list[dict[str, Any]] = [
    {
        "specversion": "1.0",
        "type": "com.example.someevent",
        "source": "/mycontext/4",
        "id": "B234-1234-1234",
        "time": "2018-04-05T17:31:00Z",
        "comexampleextension1": "value",
        "comexampleothervalue": 5,
        "datacontenttype": "application/vnd.apache.thrift.binary",
        "data_base64": "AAECAwQFBgcICQ==",
    },
    {
        "specversion": "1.0",
        "type": "com.example.someotherevent",
        "source": "/mycontext/9",
        "id": "C234-1234-1234",
        "time": "2018-04-05T17:31:05Z",
        "comexampleextension1": "value",
        "comexampleothervalue": 5,
        "datacontenttype": "application/json",
        "data": {"appinfoA": "abc", "appinfoB": 123, "appinfoC": True},
    },
]


def headers(content_type: str | None = STRUCTURED, *pairs: tuple[str, str]) -> CIMultiDict[str]:
    """Request headers; structured mode unless another Content-Type is given."""
    return base_headers(content_type, *pairs)


def minimal(**changes: Any) -> dict[str, Any]:
    """A valid minimal CloudEvent with some members changed (None values stay as JSON null)."""
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": "evt-1",
        "source": "/test",
        "type": "com.example.test",
    }
    event.update(changes)
    return event


def structured(event: Any) -> list[CloudEvent]:
    """Send ``event`` in structured mode."""
    return normalize(headers(), orjson.dumps(event), CTX)


def rejection(
    request_headers: CIMultiDict[str], body: bytes, adapter: str = "cloudevents"
) -> AdapterError:
    """The AdapterError the adapter raises for this request."""
    with pytest.raises(AdapterError) as info:
        ADAPTERS[adapter](request_headers, body, CTX)
    return info.value


def test_registry_names_the_four_adapters() -> None:
    """ADAPTERS holds exactly the adapter names the configuration accepts."""
    assert set(ADAPTERS) == {
        "camara",
        "cloudevents",
        "notify-delivery-status",
        "notify-inbound-sms",
    }


def test_every_camara_fixture_has_an_expected_partition_key() -> None:
    """The fixture table below covers the fixture directory (a new fixture needs a row)."""
    assert len(CAMARA_FIXTURES) >= 19
    assert set(PARTITION_KEYS) <= set(CAMARA_FIXTURES)


@pytest.mark.parametrize("name", CAMARA_FIXTURES)
def test_structured_camara_fixture_passes_through_with_gateway_attributes(name: str) -> None:
    """A CAMARA CloudEvent keeps every member and gains partitionkey and the gateway extensions."""
    original = fixture(name)
    events = structured(fixture(name))
    key = PARTITION_KEYS.get(name, "+123456789")
    assert events == [{**original, "partitionkey": key, **GATEWAY}]


def test_structured_roaming_status_exactly() -> None:
    """The roaming-status example becomes exactly this event."""
    [event] = structured(fixture("camara-roaming-status.json"))
    assert event == {
        "id": "123654",
        "source": "https://notificationSendServer12.supertelco.com",
        "type": "org.camaraproject.device-roaming-status-subscriptions.v0.roaming-status",
        "specversion": "1.0",
        "datacontenttype": "application/json",
        "data": {
            "device": {"phoneNumber": "+123456789"},
            "roaming": True,
            "subscriptionId": "qs15-h556-rt89-1298",
        },
        "time": "2023-01-17T13:18:23.682Z",
        "partitionkey": "+123456789",
        "gatewaysource": "partner-events",
        "gatewayreceived": RECEIVED,
    }


@pytest.mark.parametrize(
    "content_type",
    [
        "application/cloudevents+json; charset=utf-8",
        "Application/CloudEvents+JSON",
        " application/cloudevents+json ;charset=UTF-8",
    ],
)
def test_structured_content_type_ignores_case_and_parameters(content_type: str) -> None:
    """Media type parameters and letter case do not change the mode."""
    events = normalize(headers(content_type), orjson.dumps(minimal()), CTX)
    assert events == [{**minimal(), **GATEWAY}]


def test_spec_example_null_subject_is_absent_and_extensions_pass_through() -> None:
    """A null attribute is removed; extensions and data are kept as sent; no entity, no key."""
    [event] = structured(SPEC_OBJECT_EVENT)
    expected = {name: value for name, value in SPEC_OBJECT_EVENT.items() if name != "subject"}
    assert event == {**expected, **GATEWAY}
    assert "subject" not in event
    assert "partitionkey" not in event


def test_numeric_id_becomes_its_decimal_string() -> None:
    """The Commonalities guide's numeric id 123654 is accepted as "123654"."""
    guide_event = minimal(
        id=123654,
        source="https://notificationSendServer12.supertelco.com",
        type="org.camaraproject.device-roaming-subscriptions.v1.roaming-status",
        time="2023-01-17T13:18:23.682Z",
        data={"device": {"phoneNumber": "+123456789"}, "roaming": True},
    )
    [event] = structured(guide_event)
    assert event["id"] == "123654"
    assert event["partitionkey"] == "+123456789"


def test_unknown_extensions_pass_through() -> None:
    """The generic adapter keeps extension attributes it does not know, as sent."""
    event = minimal(comexampleext="x", sequence=7, sampled=True)
    assert structured(event) == [{**event, **GATEWAY}]


def test_legacy_looking_members_are_not_extension_names() -> None:
    """camelCase members are no CloudEvents attribute names: 400 naming the first (§7)."""
    event = minimal(eventSubscriptionId="s-1", event={"eventType": "ROAMING_ON"})
    with pytest.raises(BadRequest) as info:
        structured(event)
    assert info.value.field == "eventSubscriptionId"


def test_explicit_null_data_is_kept() -> None:
    """``data: null`` is an explicit null payload, distinct from absent, and stays."""
    [event] = structured(minimal(data=None))
    assert "data" in event
    assert event["data"] is None


def test_sender_partition_key_is_kept() -> None:
    """An event that already names its partition keeps that key."""
    event = minimal(partitionkey="tenant-7", data={"device": {"phoneNumber": "+123456789"}})
    assert structured(event)[0]["partitionkey"] == "tenant-7"


def test_null_partition_key_is_derived_from_data() -> None:
    """A null partitionkey counts as absent, so the key is derived."""
    event = minimal(partitionkey=None, data={"device": {"phoneNumber": "+123456789"}})
    assert structured(event)[0]["partitionkey"] == "+123456789"


def test_gateway_extensions_overwrite_the_senders() -> None:
    """A sender cannot choose gatewaysource or gatewayreceived."""
    event = minimal(gatewaysource="spoofed", gatewayreceived="1999-01-01T00:00:00Z")
    assert structured(event) == [{**minimal(), **GATEWAY}]


def test_time_with_nanoseconds_is_accepted_unchanged() -> None:
    """A time with a nine-digit fraction validates and passes through as sent."""
    [event] = structured(minimal(time="2024-06-01T13:00:00.123456789+02:00"))
    assert event["time"] == "2024-06-01T13:00:00.123456789+02:00"


@pytest.mark.parametrize(
    "time", ["2023-01-17t13:18:23z", "2023-01-17 13:18:23.5-05:00", "2023-01-17T13:18:23.682Z"]
)
def test_rfc3339_variants_are_accepted(time: str) -> None:
    """Lower-case separators, a space separator and offsets are RFC 3339 too."""
    assert structured(minimal(time=time))[0]["time"] == time


def test_type_of_255_bytes_is_accepted() -> None:
    """A type exactly as long as an AMQP routing key may be is fine."""
    [event] = structured(minimal(type="a" * 255))
    assert event["type"] == "a" * 255


def test_id_of_1024_bytes_is_accepted() -> None:
    """An id as long as §7 allows is fine (its AMQP message id is a digest)."""
    [event] = structured(minimal(id="i" * 1024))
    assert event["id"] == "i" * 1024


def test_batch_spec_example_with_data_base64() -> None:
    """The spec's batch becomes two events, data_base64 and data left as sent."""
    events = normalize(headers(BATCH), orjson.dumps(SPEC_BATCH), CTX)
    assert events == [{**SPEC_BATCH[0], **GATEWAY}, {**SPEC_BATCH[1], **GATEWAY}]


def test_empty_batch_yields_no_events() -> None:
    """``[]`` is a valid batch of nothing."""
    assert normalize(headers(BATCH), b"[]", CTX) == []


def test_batch_derives_partition_keys_per_event() -> None:
    """Every event of a batch gets its own partitionkey."""
    batch = [
        minimal(id="a", data={"device": {"phoneNumber": "+111111111"}}),
        minimal(id="b", data={"sessionId": "s-1"}),
    ]
    events = normalize(headers(BATCH), orjson.dumps(batch), CTX)
    assert [event["partitionkey"] for event in events] == ["+111111111", "s-1"]


def test_batch_rejects_all_when_one_event_is_bad() -> None:
    """A bad third event rejects the whole batch, naming its index and field."""
    batch = [minimal(id="a"), minimal(id="b"), minimal(id=None)]
    error = rejection(headers(BATCH), orjson.dumps(batch))
    assert isinstance(error, BadRequest)
    assert error.field == "[2].id"


@pytest.mark.parametrize(
    ("batch", "field"),
    [
        ([minimal(), "not an event"], "[1]"),
        ([minimal(type="has space")], "[0].type"),
        ([minimal(), minimal(specversion="0.3")], "[1].specversion"),
    ],
)
def test_batch_errors_name_the_element(batch: list[Any], field: str) -> None:
    """Each batch error names the element index and the field."""
    assert rejection(headers(BATCH), orjson.dumps(batch)).field == field


def test_batch_body_must_be_an_array() -> None:
    """A batch content type with one object is a 400 for the body as a whole."""
    error = rejection(headers(BATCH), orjson.dumps(minimal()))
    assert isinstance(error, BadRequest)
    assert error.field is None


def test_binary_mode_with_json_body() -> None:
    """ce-* headers become attributes, Content-Type datacontenttype, the JSON body data."""
    request = headers(
        "application/json",
        ("ce-specversion", "1.0"),
        ("ce-id", "bin-1"),
        ("ce-source", "/sensors/7"),
        ("ce-type", "com.example.reading"),
        ("ce-time", "2024-06-01T13:00:00Z"),
        ("X-Other", "ignored"),
    )
    body = b'{"device": {"phoneNumber": "+123456789"}, "value": 7}'
    assert normalize(request, body, CTX) == [
        {
            "specversion": "1.0",
            "id": "bin-1",
            "source": "/sensors/7",
            "type": "com.example.reading",
            "time": "2024-06-01T13:00:00Z",
            "datacontenttype": "application/json",
            "data": {"device": {"phoneNumber": "+123456789"}, "value": 7},
            "partitionkey": "+123456789",
            **GATEWAY,
        }
    ]


def test_binary_mode_percent_decodes_header_values() -> None:
    """The HTTP binding's percent-encoding example decodes to UTF-8 text."""
    request = headers(
        "application/json",
        ("CE-SpecVersion", "1.0"),
        ("Ce-Id", "bin-2"),
        ("ce-source", "/a%20b"),
        ("ce-type", "com.example.t"),
        ("ce-subject", "Euro%20%E2%82%AC%20%F0%9F%98%80"),
    )
    [event] = normalize(request, b"", CTX)
    assert event["subject"] == "Euro € 😀"
    assert event["source"] == "/a b"
    assert event["id"] == "bin-2"


def test_binary_mode_non_json_body_becomes_data_base64() -> None:
    """A body of another content type is carried as Base64 of the raw bytes."""
    raw = bytes(range(256))
    request = headers(
        "application/octet-stream",
        ("ce-specversion", "1.0"),
        ("ce-id", "bin-3"),
        ("ce-source", "/s"),
        ("ce-type", "com.example.blob"),
    )
    [event] = normalize(request, raw, CTX)
    assert event["datacontenttype"] == "application/octet-stream"
    assert base64.b64decode(event["data_base64"]) == raw
    assert "data" not in event


def test_binary_mode_text_body_keeps_content_type_parameters() -> None:
    """datacontenttype is the Content-Type as sent; a text body is Base64 too."""
    request = headers(
        "text/plain; charset=utf-8",
        ("ce-specversion", "1.0"),
        ("ce-id", "bin-4"),
        ("ce-source", "/s"),
        ("ce-type", "com.example.text"),
    )
    [event] = normalize(request, b"hello", CTX)
    assert event["datacontenttype"] == "text/plain; charset=utf-8"
    assert event["data_base64"] == base64.b64encode(b"hello").decode()


def test_binary_mode_vendor_json_body_is_data() -> None:
    """A ``*/*+json`` content type counts as JSON."""
    request = headers(
        "application/vnd.example+json",
        ("ce-specversion", "1.0"),
        ("ce-id", "bin-5"),
        ("ce-source", "/s"),
        ("ce-type", "com.example.t"),
    )
    [event] = normalize(request, b"[1, 2]", CTX)
    assert event["data"] == [1, 2]


def test_binary_mode_empty_body_has_no_data() -> None:
    """No body, no data member at all."""
    request = headers(
        None,
        ("ce-specversion", "1.0"),
        ("ce-id", "bin-6"),
        ("ce-source", "/s"),
        ("ce-type", "com.example.t"),
    )
    [event] = normalize(request, b"", CTX)
    assert event == {
        "specversion": "1.0",
        "id": "bin-6",
        "source": "/s",
        "type": "com.example.t",
        **GATEWAY,
    }


def test_binary_mode_without_content_type_carries_body_as_base64() -> None:
    """A body of unknown type cannot be assumed JSON: it travels as data_base64."""
    request = headers(
        None,
        ("ce-specversion", "1.0"),
        ("ce-id", "bin-7"),
        ("ce-source", "/s"),
        ("ce-type", "com.example.t"),
    )
    [event] = normalize(request, b'{"a": 1}', CTX)
    assert event["data_base64"] == base64.b64encode(b'{"a": 1}').decode()
    assert "datacontenttype" not in event


def test_binary_mode_extension_header_is_an_attribute() -> None:
    """Any ce-* header is an attribute, partitionkey included."""
    request = headers(
        "application/json",
        ("ce-specversion", "1.0"),
        ("ce-id", "bin-8"),
        ("ce-source", "/s"),
        ("ce-type", "com.example.t"),
        ("ce-partitionkey", "k-1"),
        ("ce-comexampleextension1", "value"),
    )
    [event] = normalize(request, b'{"sessionId": "ignored"}', CTX)
    assert event["partitionkey"] == "k-1"
    assert event["comexampleextension1"] == "value"


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        (("ce-subject", "%FF%FE"), "subject"),
        (("ce-subject", "bad\udcffsurrogate"), "subject"),
        (("ce-data", "x"), "data"),
        (("ce-datacontenttype", "text/plain"), "datacontenttype"),
        (("CE-ID", "second"), "id"),
        (("ce-time", "yesterday"), "time"),
    ],
)
def test_binary_mode_header_errors_name_the_attribute(extra: tuple[str, str], field: str) -> None:
    """Undecodable, reserved, repeated or invalid ce-* headers are 400s naming the attribute."""
    request = headers(
        "application/json",
        ("ce-specversion", "1.0"),
        ("ce-id", "bin-9"),
        ("ce-source", "/s"),
        ("ce-type", "com.example.t"),
        extra,
    )
    error = rejection(request, b"")
    assert isinstance(error, BadRequest)
    assert error.field == field


def test_binary_mode_invalid_json_body_is_bad_request() -> None:
    """A JSON content type with a body that is not JSON is a 400 about the body."""
    request = headers(
        "application/json",
        ("ce-specversion", "1.0"),
        ("ce-id", "bin-10"),
        ("ce-source", "/s"),
        ("ce-type", "com.example.t"),
    )
    error = rejection(request, b"{not json")
    assert (error.status, error.field, error.detail) == (400, None, "body is not valid JSON")


def test_binary_mode_wrong_specversion_header() -> None:
    """ce-specversion other than 1.0 names specversion."""
    request = headers(
        "application/json",
        ("ce-specversion", "0.3"),
        ("ce-id", "x"),
        ("ce-source", "/s"),
        ("ce-type", "t"),
    )
    assert rejection(request, b"").field == "specversion"


@pytest.mark.parametrize("content_type", ["application/json", None, "text/json; charset=utf-8"])
def test_plain_json_without_ce_specversion_is_not_a_cloudevent(content_type: str | None) -> None:
    """application/json (or none) without ce-specversion is a 400 naming specversion."""
    error = rejection(headers(content_type), orjson.dumps(minimal()))
    assert isinstance(error, BadRequest)
    assert error.field == "specversion"
    assert error.detail.startswith("not a CloudEvent: ")


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/xml", "application/cloudevents+xml", "multipart/form-data"],
)
def test_other_content_types_are_unsupported(content_type: str) -> None:
    """A content type that is neither a CloudEvents format nor binary mode is a 415."""
    error = rejection(headers(content_type), orjson.dumps(minimal()))
    assert isinstance(error, UnsupportedMediaType)
    assert error.status == 415
    assert error.field == "Content-Type"


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"id": None}, "id"),
        ({"id": ""}, "id"),
        ({"id": True}, "id"),
        ({"id": 1.5}, "id"),
        ({"id": ["x"]}, "id"),
        ({"source": None}, "source"),
        ({"source": ""}, "source"),
        ({"source": 5}, "source"),
        ({"type": None}, "type"),
        ({"type": ""}, "type"),
        ({"type": "com.example has.space"}, "type"),
        ({"type": "com.example\ttab"}, "type"),
        ({"type": "a" * 256}, "type"),
        ({"id": "a" * 1025}, "id"),
        ({"id": "é" * 513}, "id"),
        ({"type": "é" * 128}, "type"),
        ({"specversion": None}, "specversion"),
        ({"specversion": "0.3"}, "specversion"),
        ({"specversion": 1.0}, "specversion"),
        ({"time": "yesterday"}, "time"),
        ({"time": "2023-01-17T13:18:23"}, "time"),
        ({"time": "2023-01-17"}, "time"),
        ({"time": "20230117T131823Z"}, "time"),
        ({"time": "2023-01-17T13:18:23+0100"}, "time"),
        ({"time": "2023-01-17T13:18Z"}, "time"),
        ({"time": " 2023-01-17T13:18:23Z"}, "time"),
        ({"time": "2023-02-30T13:18:23Z"}, "time"),
        ({"time": 1673961503}, "time"),
        ({"data": {}, "data_base64": "AAEC"}, "data_base64"),
        ({"data_base64": "not base64!"}, "data_base64"),
        ({"data_base64": 12}, "data_base64"),
    ],
)
def test_invalid_events_name_the_field(event: dict[str, Any], field: str) -> None:
    """Each invalid attribute is a 400 whose field names it."""
    error = rejection(headers(), orjson.dumps(minimal(**event)))
    assert isinstance(error, BadRequest)
    assert error.status == 400
    assert error.field == field


@pytest.mark.parametrize("body", [b"", b"{", b"\xff\xfe", b"NaN", b'{"a": 1}{}'])
def test_body_that_is_not_json(body: bytes) -> None:
    """A structured body that does not parse is a 400 with no field."""
    error = rejection(headers(), body)
    assert (error.status, error.field, error.detail) == (400, None, "body is not valid JSON")


@pytest.mark.parametrize("body", [b"[]", b'"event"', b"42", b"null"])
def test_structured_body_must_be_an_object(body: bytes) -> None:
    """A structured body that is JSON but not an object is a 400 with no field."""
    error = rejection(headers(), body)
    assert isinstance(error, BadRequest)
    assert error.field is None


def test_too_deeply_nested_data_is_rejected() -> None:
    """Data nested deeper than the gateway could publish is a 400, not a 500 later."""
    deep = b'{"specversion":"1.0","id":"1","source":"/s","type":"t","data":' + b"[" * 300
    error = rejection(headers(), deep + b"]" * 300 + b"}")
    assert isinstance(error, BadRequest)
    assert error.field is None


def test_many_brackets_that_do_not_nest_are_fine() -> None:
    """Wide data (many brackets, little depth) is accepted and publishable."""
    event = minimal(data=[[i] for i in range(500)], note="[[[[" * 100)
    [result] = structured(event)
    assert orjson.loads(orjson.dumps(result))["data"] == event["data"]


def test_same_request_twice_gives_the_same_event() -> None:
    """Normalizing is deterministic: a resent event keeps its id and attributes."""
    body = (FIXTURES / "camara-roaming-on.json").read_bytes()
    assert normalize(headers(), body, CTX) == normalize(headers(), body, CTX)


def test_a_camara_event_from_any_source_is_keyed_by_the_device_its_data_names() -> None:
    """A generic source cannot aim a CAMARA event at another device: its ``partitionkey``
    is derived from ``data.device`` and a different one is a 400 naming it."""
    event = {
        "specversion": "1.0",
        "id": "spoof-1",
        "source": "/partner",
        "type": "org.camaraproject.device-roaming-status-subscriptions.v0.roaming-on",
        "data": {"device": {"phoneNumber": "+447700900001"}},
    }
    assert structured(event)[0]["partitionkey"] == "+447700900001"
    with pytest.raises(BadRequest) as refused:
        structured({**event, "partitionkey": "+447700900002"})
    assert refused.value.field == "partitionkey"
    other = {**event, "type": "com.example.thing", "partitionkey": "mine"}
    assert structured(other)[0]["partitionkey"] == "mine"
