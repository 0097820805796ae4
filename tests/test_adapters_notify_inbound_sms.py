"""The ``notify-inbound-sms`` adapter: received text messages into events."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.adapters import BadRequest, Context, UnsupportedMediaType
from gateway.adapters.notify_inbound_sms import normalize
from tests.adapter_support import FIXTURES, RECEIVED, Adapter, fixture, headers

CTX = Context("notify-inbound", RECEIVED)
ADAPTER = Adapter(normalize, CTX)
send, rejection = ADAPTER.send, ADAPTER.rejection
MESSAGE_ID = "f3a1b2c4-5d6e-4f70-8a9b-0c1d2e3f4a5b"


def message(**changes: Any) -> dict[str, Any]:
    """The inbound SMS fixture with some members changed."""
    return fixture("notify-inbound-sms.json", **changes)


def test_inbound_fixture_exactly() -> None:
    """The AU Notify example becomes exactly this event, the body as data."""
    body = (FIXTURES / "notify-inbound-sms.json").read_bytes()
    assert normalize(headers(), body, CTX) == [
        {
            "specversion": "1.0",
            "id": MESSAGE_ID,
            "source": "/callbacks/notify-inbound",
            "type": "notify.sms.inbound",
            "subject": MESSAGE_ID,
            "time": "2017-05-14T12:15:30.000000Z",
            "datacontenttype": "application/json",
            "partitionkey": "+61412987654",
            "gatewaysource": "notify-inbound",
            "gatewayreceived": RECEIVED,
            "data": orjson.loads(body),
        }
    ]


@pytest.mark.parametrize(
    ("source_number", "key"),
    [
        ("447700912345", "+447700912345"),
        (447700912345, "+447700912345"),
        ("+447700912345", "+447700912345"),
        ("07700912345", "07700912345"),
    ],
)
def test_sender_number_is_keyed_in_e164_with_plus(source_number: Any, key: str) -> None:
    """GOV.UK's 447700912345 (or a JSON number) keys +447700912345; data is unchanged."""
    [event] = send(message(source_number=source_number))
    assert event["partitionkey"] == key
    assert event["data"]["source_number"] == source_number


@pytest.mark.parametrize("source_number", [None, "", True, 0, ["+61412987654"]])
def test_no_usable_sender_no_partition_key(source_number: Any) -> None:
    """Without a sender number string the event has no partitionkey."""
    [event] = send(message(source_number=source_number))
    assert "partitionkey" not in event


def test_no_date_received_no_time() -> None:
    """date_received null: the event has no time."""
    [event] = send(message(date_received=None))
    assert "time" not in event


def test_same_message_twice_gives_the_same_event() -> None:
    """A resent inbound message keeps its id."""
    assert send(message()) == send(message())


@pytest.mark.parametrize("content_type", [None, "application/json;charset=UTF-8"])
def test_json_or_missing_content_type_is_accepted(content_type: str | None) -> None:
    """A JSON or absent Content-Type is read."""
    assert send(message(), content_type)[0]["id"] == MESSAGE_ID


def test_other_content_type_is_415() -> None:
    """A form post is a 415 naming Content-Type."""
    error = rejection(message(), "application/x-www-form-urlencoded")
    assert isinstance(error, UnsupportedMediaType)
    assert (error.status, error.field) == (415, "Content-Type")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"id": None}, "id"),
        ({"id": ""}, "id"),
        ({"id": 7}, "id"),
        ({"date_received": "today"}, "date_received"),
        ({"date_received": 1494764130}, "date_received"),
    ],
)
def test_invalid_messages_name_the_field(changes: dict[str, Any], field: str) -> None:
    """Each missing or malformed member is a 400 naming it."""
    error = rejection(message(**changes))
    assert isinstance(error, BadRequest)
    assert error.field == field


@pytest.mark.parametrize("body", [b"{", b"[]", b"null"])
def test_body_that_is_not_a_json_object(body: bytes) -> None:
    """A body that is not a JSON object is a 400 without a field."""
    error = rejection(body)
    assert isinstance(error, BadRequest)
    assert error.field is None


def test_id_longer_than_1024_bytes_is_400() -> None:
    """An id over 1024 bytes (§7) is a 400 on ``id``, not a 500 at publish."""
    error = rejection(message(id="m" * 1025))
    assert error.status == 400
    assert error.field == "id"
