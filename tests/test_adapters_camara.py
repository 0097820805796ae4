"""The ``camara`` adapter: CloudEvents in every mode, as plain JSON, hybrid and legacy bodies."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from gateway.adapters import BadRequest, Context, UnsupportedMediaType
from gateway.adapters.camara import LEGACY_TYPES, normalize
from tests.adapter_support import FIXTURES, RECEIVED, Adapter, fixture, headers

CTX = Context("camara", RECEIVED)
ADAPTER = Adapter(normalize, CTX)
send, rejection = ADAPTER.send, ADAPTER.rejection
GATEWAY = {"gatewaysource": "camara", "gatewayreceived": RECEIVED}
CAMARA_FIXTURES = sorted(path.name for path in FIXTURES.glob("camara-*.json"))
PARTITION_KEYS = {
    "camara-legacy-device-status-connectivity-data.json": "+123456787",
    "camara-qod-status-changed.json": "123e4567-e89b-12d3-a456-426614174000",
}

# Pre-CloudEvents device-status body (DeviceStatus commit 92f09c2fe3d8, domain notes §4.2).
LEGACY_ROAMING: dict[str, Any] = {
    "eventSubscriptionId": "qs15-h556-rt89-1298",
    "event": {
        "eventId": "5698d710-9b1b-4695-a958-66e5b7f8e0a2",
        "eventType": "ROAMING_STATUS",
        "eventTime": "2023-07-03T12:27:08.312Z",
        "eventDetail": {
            "device": {"phoneNumber": "+123456789"},
            "roaming": True,
            "countryCode": 208,
            "countryName": ["FR"],
        },
    },
}
# QoD v0.9.0 EventNotification (qod-api.yaml): no eventSubscriptionId required, a sessionId.
LEGACY_QOD: dict[str, Any] = {
    "event": {
        "eventId": "2a6d6a9c-6a3e-4f4d-9a52-2b1b0f7c9b11",
        "eventType": "QOS_STATUS_CHANGED",
        "eventTime": "2023-03-20T10:15:30Z",
        "eventDetail": {
            "sessionId": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
            "qosStatus": "UNAVAILABLE",
            "statusInfo": "DURATION_EXPIRED",
        },
    },
    "eventSubscriptionId": "qod-sub-1",
}
# Network as Code "Device Status notification details" hybrid body (domain notes §4.2):
# CloudEvents attributes plus the legacy members, phone number without its "+".
NAC_HYBRID: dict[str, Any] = {
    "id": "b5c3d1f0-4a1e-4b7c-9f1e-2d3c4b5a6978",
    "source": "/device-status/v0/subscriptions/7f1c2b3a-1111-2222-3333-444455556666",
    "type": "org.camaraproject.device-status.v0.connectivity-data",
    "specversion": "1.0",
    "datacontenttype": "application/json",
    "time": "2024-05-13T09:41:52.123456Z",
    "eventSubscriptionId": "7f1c2b3a-1111-2222-3333-444455556666",
    "event": {
        "eventType": "DEVICE_STATUS_CHANGED",
        "eventTime": "2024-05-13T09:41:52.123456Z",
        "eventDetail": {
            "device": {"phoneNumber": "36701234567"},
            "subscriptionId": "7f1c2b3a-1111-2222-3333-444455556666",
            "deviceStatus": "CONNECTED_DATA",
        },
    },
    "data": {
        "device": {"phoneNumber": "36701234567"},
        "subscriptionId": "7f1c2b3a-1111-2222-3333-444455556666",
        "deviceStatus": "CONNECTED_DATA",
    },
}


def digest(body: Any) -> str:
    """The id the gateway gives a legacy body without eventId."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


@pytest.mark.parametrize("content_type", ["application/json", None, "application/cloudevents+json"])
@pytest.mark.parametrize("name", CAMARA_FIXTURES)
def test_camara_fixture_in_any_json_content_type(name: str, content_type: str | None) -> None:
    """Each CAMARA CloudEvent is accepted structured, as application/json and untyped."""
    events = send(fixture(name), content_type)
    key = PARTITION_KEYS.get(name, "+123456789")
    assert events == [{**fixture(name), "partitionkey": key, **GATEWAY}]


def test_qod_fixture_is_keyed_by_session() -> None:
    """A QoD event, which names no device, is keyed by its sessionId."""
    [event] = send(fixture("camara-qod-status-changed.json"))
    assert event == {
        "id": "83a0d986-0866-4f38-b8c0-fc65bfcda452",
        "source": "https://api.example.com/qod/v1/sessions/123e4567-e89b-12d3-a456-426614174000",
        "specversion": "1.0",
        "type": "org.camaraproject.quality-on-demand.v1.qos-status-changed",
        "time": "2024-06-01T13:00:00Z",
        "data": {
            "sessionId": "123e4567-e89b-12d3-a456-426614174000",
            "qosStatus": "UNAVAILABLE",
            "statusInfo": "DURATION_EXPIRED",
        },
        "partitionkey": "123e4567-e89b-12d3-a456-426614174000",
        **GATEWAY,
    }


def test_binary_mode_is_read_as_the_cloudevents_adapter_does() -> None:
    """ce-* headers with application/json are binary mode, not a plain JSON body."""
    request = headers(
        "application/json",
        ("ce-specversion", "1.0"),
        ("ce-id", "b-1"),
        ("ce-source", "/s"),
        ("ce-type", "org.camaraproject.device-status.v0.roaming-on"),
        ("ce-time", "2024-01-01T00:00:00Z"),
    )
    [event] = normalize(request, b'{"device": {"phoneNumber": "+123456789"}}', CTX)
    assert event["data"] == {"device": {"phoneNumber": "+123456789"}}
    assert event["datacontenttype"] == "application/json"
    assert event["partitionkey"] == "+123456789"


def test_batch_is_read_as_the_cloudevents_adapter_does() -> None:
    """A CloudEvents batch works on the camara adapter too."""
    batch = [fixture("camara-roaming-on.json"), fixture("camara-roaming-off.json")]
    events = normalize(headers("application/cloudevents-batch+json"), orjson.dumps(batch), CTX)
    assert [event["id"] for event in events] == ["123656", "123655"]


def test_commonalities_guide_numeric_id_as_json() -> None:
    """The guide's example with a numeric id, sent as application/json, gets "123654"."""
    guide = {
        "id": 123654,
        "source": "https://notificationSendServer12.supertelco.com",
        "type": "org.camaraproject.device-roaming-subscriptions.v1.roaming-status",
        "specversion": "1.0",
        "datacontenttype": "application/json",
        "data": {
            "device": {"phoneNumber": "+123456789"},
            "roaming": True,
            "countryCode": 208,
            "countryName": ["FR"],
        },
        "time": "2021-12-12T00:00:00Z",
    }
    [event] = send(guide)
    assert event == {**guide, "id": "123654", "partitionkey": "+123456789", **GATEWAY}


def test_legacy_roaming_body_exactly() -> None:
    """The pre-CloudEvents body becomes a device-status v0 CloudEvent with subscriptionId."""
    [event] = send(LEGACY_ROAMING)
    assert event == {
        "specversion": "1.0",
        "id": "5698d710-9b1b-4695-a958-66e5b7f8e0a2",
        "source": "/callbacks/camara",
        "type": "org.camaraproject.device-status.v0.roaming-status",
        "time": "2023-07-03T12:27:08.312Z",
        "datacontenttype": "application/json",
        "data": {
            "device": {"phoneNumber": "+123456789"},
            "roaming": True,
            "countryCode": 208,
            "countryName": ["FR"],
            "subscriptionId": "qs15-h556-rt89-1298",
        },
        "partitionkey": "+123456789",
        **GATEWAY,
    }


def test_legacy_qod_v0_9_body_exactly() -> None:
    """A QoD v0.9 notification becomes qod.v0.qos-status-changed keyed by its session."""
    [event] = send(LEGACY_QOD)
    assert event == {
        "specversion": "1.0",
        "id": "2a6d6a9c-6a3e-4f4d-9a52-2b1b0f7c9b11",
        "source": "/callbacks/camara",
        "type": "org.camaraproject.qod.v0.qos-status-changed",
        "time": "2023-03-20T10:15:30Z",
        "datacontenttype": "application/json",
        "data": {
            "sessionId": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
            "qosStatus": "UNAVAILABLE",
            "statusInfo": "DURATION_EXPIRED",
            "subscriptionId": "qod-sub-1",
        },
        "partitionkey": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
        **GATEWAY,
    }


@pytest.mark.parametrize(
    ("event_type", "ce_type"),
    [
        ("ROAMING_STATUS", "org.camaraproject.device-status.v0.roaming-status"),
        ("ROAMING_ON", "org.camaraproject.device-status.v0.roaming-on"),
        ("ROAMING_OFF", "org.camaraproject.device-status.v0.roaming-off"),
        ("ROAMING_CHANGE_COUNTRY", "org.camaraproject.device-status.v0.roaming-change-country"),
        ("SUBSCRIPTION_ENDS", "org.camaraproject.device-status.v0.subscription-ends"),
        ("CONNECTIVITY_DATA", "org.camaraproject.device-status.v0.connectivity-data"),
        ("CONNECTIVITY_SMS", "org.camaraproject.device-status.v0.connectivity-sms"),
        (
            "CONNECTIVITY_DISCONNECTED",
            "org.camaraproject.device-status.v0.connectivity-disconnected",
        ),
        ("REACHABILITY_DATA", "org.camaraproject.device-status.v0.connectivity-data"),
        ("REACHABILITY_SMS", "org.camaraproject.device-status.v0.connectivity-sms"),
        (
            "REACHABILITY_DISCONNECTED",
            "org.camaraproject.device-status.v0.connectivity-disconnected",
        ),
        ("QOS_STATUS_CHANGED", "org.camaraproject.qod.v0.qos-status-changed"),
    ],
)
def test_legacy_event_type_table(event_type: str, ce_type: str) -> None:
    """Each legacy eventType maps to its CloudEvents type."""
    body = {"event": {"eventType": event_type, "eventTime": "2023-07-03T12:27:08Z"}}
    assert send(body)[0]["type"] == ce_type


def test_legacy_table_is_exactly_the_tested_one() -> None:
    """No legacy eventType is mapped without a test above."""
    assert len(LEGACY_TYPES) == 12


def test_legacy_body_without_event_id_gets_a_stable_digest() -> None:
    """Without eventId the id is the first 32 hex of SHA-256 over the sorted-key body."""
    body = {
        "eventSubscriptionId": "sub-9",
        "event": {
            "eventType": "ROAMING_ON",
            "eventTime": "2023-07-03T12:27:08Z",
            "eventDetail": {"device": {"phoneNumber": "+123456789"}},
        },
    }
    [event] = send(body)
    assert event["id"] == digest(body)
    assert len(event["id"]) == 32
    assert event["data"] == {"device": {"phoneNumber": "+123456789"}, "subscriptionId": "sub-9"}


def test_resent_legacy_body_keeps_its_id_whatever_the_formatting() -> None:
    """Key order and whitespace do not change the digest id; a changed body does."""
    compact = (
        b'{"eventSubscriptionId":"s",'
        b'"event":{"eventType":"ROAMING_OFF","eventTime":"2023-07-03T12:27:08Z"}}'
    )
    spaced = b"""{ "event": { "eventTime": "2023-07-03T12:27:08Z", "eventType": "ROAMING_OFF" },
                  "eventSubscriptionId": "s" }"""
    first = normalize(headers(), compact, CTX)[0]["id"]
    assert normalize(headers(), spaced, CTX)[0]["id"] == first
    assert normalize(headers(), compact, CTX)[0]["id"] == first
    later = compact.replace(b"12:27:08Z", b"12:27:09Z")
    assert normalize(headers(), later, CTX)[0]["id"] != first


def test_legacy_numeric_event_id_becomes_a_string() -> None:
    """A numeric eventId is turned into its decimal string."""
    body = {
        "event": {"eventId": 42, "eventType": "ROAMING_ON", "eventTime": "2023-07-03T12:27:08Z"}
    }
    assert send(body)[0]["id"] == "42"


def test_legacy_subscription_id_in_detail_wins() -> None:
    """An eventDetail that already has subscriptionId keeps its own."""
    body = {
        "eventSubscriptionId": "outer",
        "event": {
            "eventType": "ROAMING_ON",
            "eventTime": "2023-07-03T12:27:08Z",
            "eventDetail": {"subscriptionId": "inner"},
        },
    }
    assert send(body)[0]["data"] == {"subscriptionId": "inner"}


def test_legacy_device_status_without_device_has_no_partition_key() -> None:
    """The NaC SDK's legacy ``deviceStatus`` detail names no device, so no key."""
    body = {
        "eventSubscriptionId": "s-1",
        "event": {
            "eventType": "CONNECTIVITY_DATA",
            "eventTime": "2023-07-03T12:27:08Z",
            "eventDetail": {"deviceStatus": "REACHABLE"},
        },
    }
    [event] = send(body)
    assert "partitionkey" not in event
    assert event["data"] == {"deviceStatus": "REACHABLE", "subscriptionId": "s-1"}


@pytest.mark.parametrize(
    ("event", "extra", "field"),
    [
        ({"eventType": "DEVICE_STATUS_CHANGED"}, {}, "event.eventDetail.deviceStatus"),
        (
            {"eventType": "CONNECTIVITY", "eventDetail": {"deviceStatus": "ASLEEP"}},
            {},
            "event.eventDetail.deviceStatus",
        ),
        ({"eventType": "roaming_status"}, {}, "event.eventType"),
        ({"eventType": None}, {}, "event.eventType"),
        ({"eventType": 3}, {}, "event.eventType"),
        ({"eventTime": None}, {}, "event.eventTime"),
        ({"eventTime": "last tuesday"}, {}, "event.eventTime"),
        ({"eventTime": "2023-07-03T12:27:08"}, {}, "event.eventTime"),
        ({"eventDetail": ["x"]}, {}, "event.eventDetail"),
        ({"eventDetail": "x"}, {}, "event.eventDetail"),
        ({"eventId": True}, {}, "event.eventId"),
        ({"eventId": ""}, {}, "event.eventId"),
        ({"eventId": {"a": 1}}, {}, "event.eventId"),
        ({}, {"eventSubscriptionId": 17}, "eventSubscriptionId"),
        ({}, {"eventSubscriptionId": ""}, "eventSubscriptionId"),
    ],
)
def test_legacy_errors_name_the_field(
    event: dict[str, Any], extra: dict[str, Any], field: str
) -> None:
    """Each malformed legacy member is a 400 naming its path."""
    body = {
        "event": {"eventType": "ROAMING_ON", "eventTime": "2023-07-03T12:27:08Z", **event},
        **extra,
    }
    error = rejection(body)
    assert isinstance(error, BadRequest)
    assert error.field == field


def test_nac_hybrid_body() -> None:
    """CloudEvents attributes win, the legacy members go, the phone number is keyed in E.164."""
    [event] = send(NAC_HYBRID)
    expected = {
        name: value
        for name, value in NAC_HYBRID.items()
        if name not in ("event", "eventSubscriptionId")
    }
    assert event == {**expected, "partitionkey": "+36701234567", **GATEWAY}
    assert event["data"]["device"]["phoneNumber"] == "36701234567"  # data unchanged


@pytest.mark.parametrize("content_type", ["application/cloudevents+json", None])
def test_hybrid_body_is_recognised_in_structured_mode_too(content_type: str | None) -> None:
    """A hybrid body sent as application/cloudevents+json (or untyped) loses the legacy members."""
    [event] = send(NAC_HYBRID, content_type)
    assert "event" not in event
    assert "eventSubscriptionId" not in event
    assert event["partitionkey"] == "+36701234567"


def test_hybrid_bodies_in_a_batch() -> None:
    """Each hybrid event of a batch is merged; a bad one is named with its index."""
    without_time = {name: value for name, value in NAC_HYBRID.items() if name != "time"}
    batch = [NAC_HYBRID, without_time]
    events = send(batch, "application/cloudevents-batch+json")
    assert [event["time"] for event in events] == ["2024-05-13T09:41:52.123456Z"] * 2
    assert all("event" not in event for event in events)
    broken = {**without_time, "event": {**NAC_HYBRID["event"], "eventTime": "soon"}}
    error = rejection([NAC_HYBRID, broken], "application/cloudevents-batch+json")
    assert error.field == "[1].event.eventTime"


def test_hybrid_without_time_and_data_takes_them_from_the_legacy_event() -> None:
    """Missing time and data come from event.eventTime and event.eventDetail + subscriptionId."""
    hybrid = {name: value for name, value in NAC_HYBRID.items() if name not in ("time", "data")}
    [event] = send(hybrid)
    assert event["time"] == "2024-05-13T09:41:52.123456Z"
    assert event["data"] == {
        "device": {"phoneNumber": "36701234567"},
        "subscriptionId": "7f1c2b3a-1111-2222-3333-444455556666",
        "deviceStatus": "CONNECTED_DATA",
    }
    assert "event" not in event
    assert "eventSubscriptionId" not in event


def test_hybrid_adds_subscription_id_to_legacy_detail() -> None:
    """eventSubscriptionId fills data.subscriptionId when the detail lacks it."""
    hybrid = {
        "id": "h-1",
        "source": "/s",
        "type": "org.camaraproject.device-status.v0.roaming-on",
        "specversion": "1.0",
        "eventSubscriptionId": "sub-h",
        "event": {
            "eventTime": "2024-05-13T09:41:52Z",
            "eventDetail": {"device": {"phoneNumber": "+123456789"}},
        },
    }
    [event] = send(hybrid)
    assert event["data"] == {"device": {"phoneNumber": "+123456789"}, "subscriptionId": "sub-h"}
    assert event["time"] == "2024-05-13T09:41:52Z"


def test_hybrid_with_only_subscription_id_drops_it() -> None:
    """A CloudEvent with a stray eventSubscriptionId loses that member and nothing else."""
    hybrid = {**fixture("camara-roaming-on.json"), "eventSubscriptionId": "x"}
    assert send(hybrid) == [
        {**fixture("camara-roaming-on.json"), "partitionkey": "+123456789", **GATEWAY}
    ]


def test_hybrid_with_invalid_legacy_time_names_it() -> None:
    """When time comes from event.eventTime, a bad value names event.eventTime."""
    hybrid = {name: value for name, value in NAC_HYBRID.items() if name != "time"}
    hybrid["event"] = {**NAC_HYBRID["event"], "eventTime": "soon"}
    assert rejection(hybrid).field == "event.eventTime"


def test_hybrid_still_needs_the_cloudevents_attributes() -> None:
    """A hybrid body is validated as a CloudEvent: no id, 400 naming id."""
    hybrid = {name: value for name, value in NAC_HYBRID.items() if name != "id"}
    assert rejection(hybrid).field == "id"


@pytest.mark.parametrize(
    "body",
    [
        {"hello": "world"},
        {"event": {"eventTime": "2023-07-03T12:27:08Z"}},
        {"event": "ROAMING_ON"},
        {"specversion": None, "id": "1"},
    ],
)
def test_json_that_is_neither_shape_names_specversion(body: dict[str, Any]) -> None:
    """A JSON object that is no CloudEvent and no legacy body is a 400 naming specversion."""
    error = rejection(body)
    assert isinstance(error, BadRequest)
    assert error.field == "specversion"


@pytest.mark.parametrize("body", [b"not json", b"", b"[1]"])
def test_body_errors_have_no_field(body: bytes) -> None:
    """A body that is not a JSON object is a 400 without a field."""
    error = rejection(body)
    assert isinstance(error, BadRequest)
    assert error.field is None


def test_unreadable_content_type_is_415() -> None:
    """A form post is neither JSON nor CloudEvents: 415."""
    error = rejection(fixture("camara-roaming-on.json"), "application/x-www-form-urlencoded")
    assert isinstance(error, UnsupportedMediaType)
    assert error.status == 415


@pytest.mark.parametrize("body", [LEGACY_ROAMING, NAC_HYBRID, fixture("camara-roaming-on.json")])
def test_same_callback_twice_gives_the_same_event(body: dict[str, Any]) -> None:
    """Every shape is deterministic: the same bytes give the same id and event."""
    raw = orjson.dumps(body)
    assert normalize(headers(), raw, CTX) == normalize(headers(), raw, CTX)


def test_legacy_event_id_longer_than_1024_bytes_is_400() -> None:
    """An eventId over 1024 bytes (§7) is a 400 on ``event.eventId``."""
    body = {
        "event": {
            "eventId": "e" * 1025,
            "eventType": "ROAMING_ON",
            "eventTime": "2023-07-03T12:27:08Z",
        }
    }
    error = rejection(body)
    assert error.status == 400
    assert error.field == "event.eventId"


# --- contract §3 "More shapes every adapter must take", §8 partitionkey ----------------------


def test_nac_hybrid_without_data_subscription_id_gets_event_subscription_id() -> None:
    """Hybrid data without subscriptionId gets eventSubscriptionId, so workers find it."""
    data = {"device": {"phoneNumber": "36701234567"}, "deviceStatus": "REACHABLE"}
    hybrid = {**NAC_HYBRID, "data": data}
    [event] = send(hybrid)
    assert event["data"] == {**data, "subscriptionId": NAC_HYBRID["eventSubscriptionId"]}
    assert "eventSubscriptionId" not in event


def test_hybrid_with_only_event_subscription_id_and_no_data() -> None:
    """A CloudEvent with eventSubscriptionId and no data gets data.subscriptionId alone."""
    body = {
        "id": "e-1",
        "source": "/s",
        "type": "org.camaraproject.device-status.v0.subscription-ends",
        "specversion": "1.0",
        "time": "2024-05-13T09:41:52Z",
        "eventSubscriptionId": "sub-9",
    }
    [event] = send(body)
    assert event["data"] == {"subscriptionId": "sub-9"}


@pytest.mark.parametrize(
    ("event_type", "status", "ce_type"),
    [
        ("CONNECTIVITY", "REACHABLE", "org.camaraproject.device-status.v0.connectivity-data"),
        (
            "CONNECTIVITY",
            "UNREACHABLE",
            "org.camaraproject.device-status.v0.connectivity-disconnected",
        ),
        (
            "DEVICE_STATUS_CHANGED",
            "REACHABLE",
            "org.camaraproject.device-status.v0.connectivity-data",
        ),
        (
            "DEVICE_STATUS_CHANGED",
            "UNREACHABLE",
            "org.camaraproject.device-status.v0.connectivity-disconnected",
        ),
    ],
)
def test_older_nac_connectivity_body(event_type: str, status: str, ce_type: str) -> None:
    """The older NaC body's deviceStatus REACHABLE/UNREACHABLE picks the connectivity type."""
    body = {
        "eventSubscriptionId": "sub-c",
        "event": {
            "eventType": event_type,
            "eventTime": "2024-05-13T09:41:52Z",
            "eventDetail": {"device": {"phoneNumber": "36701234567"}, "deviceStatus": status},
        },
    }
    [event] = send(body)
    assert event["type"] == ce_type
    assert event["partitionkey"] == "+36701234567"
    assert event["data"] == {
        "device": {"phoneNumber": "36701234567"},
        "deviceStatus": status,
        "subscriptionId": "sub-c",
    }


def test_x_correlator_becomes_xcorrelator() -> None:
    """The x-correlator header is copied to every event as the xcorrelator extension."""
    raw = orjson.dumps(fixture("camara-roaming-on.json"))
    [event] = normalize(headers("application/json", ("x-correlator", "c-1:abc")), raw, CTX)
    assert event["xcorrelator"] == "c-1:abc"
    [plain] = normalize(headers("application/json"), raw, CTX)
    assert "xcorrelator" not in plain
    [odd] = normalize(headers("application/json", ("x-correlator", "has space")), raw, CTX)
    assert "xcorrelator" not in odd


@pytest.mark.parametrize("phone", [36701234567, "36701234567", "+36701234567"])
def test_phone_number_forms_key_with_plus_and_data_unchanged(phone: Any) -> None:
    """A phone number as a JSON number or without + keys +E.164; data keeps what was sent."""
    body = fixture("camara-roaming-on.json")
    body["data"]["device"] = {"phoneNumber": phone}
    [event] = send(body)
    assert event["partitionkey"] == "+36701234567"
    assert event["data"]["device"]["phoneNumber"] == phone


def test_qos_provisioning_is_keyed_by_assignment_id() -> None:
    """qos-provisioning status-changed events are keyed by data.assignmentId."""
    body = {
        "id": "qp-1",
        "source": "https://api.example.com/qos-provisioning/v0",
        "type": "org.camaraproject.qos-provisioning.v0.status-changed",
        "specversion": "1.0",
        "time": "2025-01-01T00:00:00Z",
        "data": {"assignmentId": "as-1", "status": "AVAILABLE"},
    }
    [event] = send(body, "application/cloudevents+json")
    assert event["partitionkey"] == "as-1"


def test_ipv4_device_keys_with_private_address_or_port() -> None:
    """An IPv4 device is keyed ipv4:<public>/<private>, or ipv4:<public>:<port>."""
    body = fixture("camara-roaming-on.json")
    body["data"]["device"] = {
        "ipv4Address": {"publicAddress": "84.125.93.10", "privateAddress": "10.0.0.1"}
    }
    assert send(body)[0]["partitionkey"] == "ipv4:84.125.93.10/10.0.0.1"
    body["data"]["device"] = {"ipv4Address": {"publicAddress": "84.125.93.10", "publicPort": 80}}
    assert send(body)[0]["partitionkey"] == "ipv4:84.125.93.10:80"


def test_sender_partition_key_that_differs_is_400() -> None:
    """A sender's partitionkey naming another entity than data is a 400 naming partitionkey."""
    body = {**fixture("camara-roaming-on.json"), "partitionkey": "+999999999"}
    assert rejection(body).field == "partitionkey"
    batch = [fixture("camara-roaming-on.json"), body]
    assert rejection(batch, "application/cloudevents-batch+json").field == "[1].partitionkey"


@pytest.mark.parametrize("sent", ["+123456789", "123456789"])
def test_sender_partition_key_that_agrees_is_kept_in_e164(sent: str) -> None:
    """A sender's partitionkey equal to the derived one (with or without +) is accepted."""
    body = {**fixture("camara-roaming-on.json"), "partitionkey": sent}
    assert send(body)[0]["partitionkey"] == "+123456789"


def test_sender_partition_key_without_derivable_entity_is_kept() -> None:
    """When data names no entity the sender's partitionkey is kept as sent."""
    body = {**fixture("camara-subscription-started-roaming.json"), "partitionkey": "mine"}
    body["data"] = {"subscriptionId": "s", "initiationReason": "SUBSCRIPTION_CREATED"}
    assert send(body)[0]["partitionkey"] == "mine"


def test_cloudevents_adapter_takes_x_correlator_too() -> None:
    """A CAMARA sender pointed at a cloudevents source keeps its x-correlator as well."""
    from gateway.adapters import cloudevents

    raw = orjson.dumps(fixture("camara-roaming-on.json"))
    request = headers("application/cloudevents+json", ("X-Correlator", "abc-1"))
    [event] = cloudevents.normalize(request, raw, CTX)
    assert event["xcorrelator"] == "abc-1"
    sent = {**fixture("camara-roaming-on.json"), "xcorrelator": "own"}
    [kept] = cloudevents.normalize(request, orjson.dumps(sent), CTX)
    assert kept["xcorrelator"] == "own"
