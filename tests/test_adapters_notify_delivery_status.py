"""The ``notify-delivery-status`` adapter: Notify delivery receipts into events."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.adapters import BadRequest, Context, UnsupportedMediaType
from gateway.adapters.notify_delivery_status import normalize
from tests.adapter_support import FIXTURES, RECEIVED, Adapter, fixture, headers

CTX = Context("notify-status", RECEIVED)
ADAPTER = Adapter(normalize, CTX)
send, rejection = ADAPTER.send, ADAPTER.rejection
NOTIFY_ID = "740e5834-3a29-46b4-9a6f-16142fde533a"
# GOV.UK field table (no public SMS receipt example exists), with its extra template fields.
SMS_RECEIPT: dict[str, Any] = {
    "id": "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0",
    "reference": None,
    "to": "07700912345",
    "status": "temporary-failure",
    "notification_type": "sms",
    "created_at": "2017-05-14T12:15:30.000000Z",
    "completed_at": None,
    "sent_at": "2017-05-14T12:15:31.000000Z",
    "template_id": "f33517ff-2a88-4f6e-b855-c550268ce08a",
    "template_version": 1,
}


def receipt(**changes: Any) -> dict[str, Any]:
    """The email receipt fixture with some members changed."""
    return fixture("notify-delivery-email-delivered.json", **changes)


def test_email_delivered_fixture_exactly() -> None:
    """The AU Notify example becomes exactly this event, the body as data."""
    body = (FIXTURES / "notify-delivery-email-delivered.json").read_bytes()
    assert normalize(headers(), body, CTX) == [
        {
            "specversion": "1.0",
            "id": f"{NOTIFY_ID}:delivered",
            "source": "/callbacks/notify-status",
            "type": "notify.email.delivery-status",
            "subject": NOTIFY_ID,
            "time": "2017-05-14T12:15:30.000000Z",
            "datacontenttype": "application/json",
            "partitionkey": NOTIFY_ID,
            "gatewaysource": "notify-status",
            "gatewayreceived": RECEIVED,
            "data": orjson.loads(body),
        }
    ]


def test_sms_receipt_without_completed_at_uses_created_at() -> None:
    """completed_at null: time is created_at; every body member, extras too, stays in data."""
    [event] = send(SMS_RECEIPT)
    assert event["id"] == f"{SMS_RECEIPT['id']}:temporary-failure"
    assert event["type"] == "notify.sms.delivery-status"
    assert event["time"] == "2017-05-14T12:15:30.000000Z"
    assert event["data"] == SMS_RECEIPT


def test_completed_at_wins_over_created_at() -> None:
    """time is completed_at when Notify gives it."""
    [event] = send(receipt(created_at="2017-05-14T12:00:00.000000Z"))
    assert event["time"] == "2017-05-14T12:15:30.000000Z"


def test_no_timestamps_no_time() -> None:
    """Without completed_at and created_at the event has no time."""
    body = receipt(completed_at=None)
    del body["created_at"]
    [event] = send(body)
    assert "time" not in event


def test_one_id_per_status() -> None:
    """A resent receipt keeps its id; the next status of the same message gets a new one."""
    first = send(receipt())[0]["id"]
    assert send(receipt())[0]["id"] == first
    assert send(receipt(status="permanent-failure"))[0]["id"] == f"{NOTIFY_ID}:permanent-failure"


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json; charset=utf-8", "APPLICATION/JSON", "application/vnd.notify+json"],
)
def test_json_or_missing_content_type_is_accepted(content_type: str | None) -> None:
    """Any JSON media type, or none at all, is read."""
    assert send(receipt(), content_type)[0]["id"] == f"{NOTIFY_ID}:delivered"


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_other_content_types_are_415(content_type: str) -> None:
    """A content type that is not JSON is a 415 naming Content-Type."""
    error = rejection(receipt(), content_type)
    assert isinstance(error, UnsupportedMediaType)
    assert (error.status, error.field) == (415, "Content-Type")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"id": None}, "id"),
        ({"id": ""}, "id"),
        ({"id": 12}, "id"),
        ({"status": None}, "status"),
        ({"status": ""}, "status"),
        ({"notification_type": None}, "notification_type"),
        ({"notification_type": "Email"}, "notification_type"),
        ({"notification_type": "e mail"}, "notification_type"),
        ({"notification_type": "sms.x"}, "notification_type"),
        ({"notification_type": "1sms"}, "notification_type"),
        ({"notification_type": "a" * 240}, "notification_type"),
        ({"completed_at": "soon"}, "completed_at"),
        ({"completed_at": 1494764130}, "completed_at"),
        ({"completed_at": None, "created_at": "2017-05-14"}, "created_at"),
    ],
)
def test_invalid_receipts_name_the_field(changes: dict[str, Any], field: str) -> None:
    """Each missing or malformed member is a 400 naming it."""
    error = rejection(receipt(**changes))
    assert isinstance(error, BadRequest)
    assert error.field == field


def test_missing_required_member_names_it() -> None:
    """A receipt without status names status."""
    body = receipt()
    del body["status"]
    assert rejection(body).field == "status"


@pytest.mark.parametrize("body", [b"", b"id=1&status=delivered", b"[]", b'"receipt"'])
def test_body_that_is_not_a_json_object(body: bytes) -> None:
    """A body that is not a JSON object is a 400 without a field."""
    error = rejection(body)
    assert isinstance(error, BadRequest)
    assert error.field is None


def test_id_longer_than_1024_bytes_is_400() -> None:
    """``{id}:{status}`` over 1024 bytes (§7) is a 400 on ``id``."""
    error = ADAPTER.rejection(receipt(id="n" * 1020))
    assert error.status == 400
    assert error.field == "id"


# GOV.UK Notify complaint callback (alphagov/notifications-api service_callback_tasks.py).
COMPLAINT: dict[str, Any] = {
    "notification_id": "5b1e2f3a-0c4d-4e5f-8a9b-0c1d2e3f4a5b",
    "complaint_id": "c0mp1a1n-7000-4000-8000-000000000001",
    "reference": "ref-1",
    "to": "person@example.com",
    "complaint_date": "2024-02-01T10:00:00.000000Z",
}
# GOV.UK returned-letter callback (notifications-tech-docs _callbacks.md field list).
RETURNED_LETTER: dict[str, Any] = {
    "notification_id": "6c2f3a4b-1d5e-4f60-9b0c-1d2e3f4a5b6c",
    "reference": "letter-1",
    "date_sent": "2024-01-20T09:00:00.000000Z",
    "sent_by": "Example Service",
    "template_name": "Letter",
    "template_id": "f33517ff-2a88-4f6e-b855-c550268ce08a",
    "template_version": 3,
    "spreadsheet_file_name": None,
    "spreadsheet_row_number": None,
    "upload_letter_file_name": None,
}


def test_complaint_callback() -> None:
    """A complaint is notify.email.complaint, id complaint_id, time complaint_date."""
    [event] = send(COMPLAINT)
    assert event == {
        "specversion": "1.0",
        "id": COMPLAINT["complaint_id"],
        "source": "/callbacks/notify-status",
        "type": "notify.email.complaint",
        "subject": COMPLAINT["notification_id"],
        "time": COMPLAINT["complaint_date"],
        "datacontenttype": "application/json",
        "partitionkey": COMPLAINT["notification_id"],
        "gatewaysource": "notify-status",
        "gatewayreceived": RECEIVED,
        "data": COMPLAINT,
    }


def test_returned_letter_callback() -> None:
    """A returned letter is notify.letter.returned, id <notification_id>:returned, receive time."""
    [event] = send(RETURNED_LETTER)
    assert event["type"] == "notify.letter.returned"
    assert event["id"] == f"{RETURNED_LETTER['notification_id']}:returned"
    assert event["subject"] == event["partitionkey"] == RETURNED_LETTER["notification_id"]
    assert event["time"] == RECEIVED
    assert event["data"] == RETURNED_LETTER
    assert send(RETURNED_LETTER) == [event]  # the same callback twice: the same event


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**COMPLAINT, "complaint_date": None}, "complaint_date"),
        ({**COMPLAINT, "complaint_date": "yesterday"}, "complaint_date"),
        ({**COMPLAINT, "notification_id": None}, "notification_id"),
        ({**COMPLAINT, "complaint_id": 5}, "complaint_id"),
        ({**RETURNED_LETTER, "notification_id": ""}, "notification_id"),
    ],
)
def test_complaint_and_returned_letter_errors_name_the_field(
    body: dict[str, Any], field: str
) -> None:
    """A malformed complaint or returned letter is a 400 naming its field."""
    error = rejection(body)
    assert isinstance(error, BadRequest)
    assert error.field == field
