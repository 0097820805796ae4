"""Built-in planner for the ``sms`` queue: Notify SMS delivery receipts and inbound texts.

``notify.sms.delivery-status`` adds ``data.status`` to the message's history (``data.id`` is
Notify's id). Its time is ``completed_at``, else ``sent_at``, else ``created_at`` (GOV.UK
sends ``completed_at`` null on some final receipts), else the event's. A final status
(``precedence.FINAL_MESSAGE_STATUSES``) outranks any non-final one whatever the times.
``notify.sms.inbound`` keeps the received text (never logged).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from consumers.event import Event, Unprocessable
from consumers.handlers.camara import data_of, ignore, optional_str, version
from consumers.state import StateStore
from consumers.state.precedence import message_tier
from consumers.state.writes import InboundWrite, MessageStatusWrite, Write
from consumers.worker import Handler, applying
from gateway.cloudevent import parse_time

DELIVERY_STATUS = "notify.sms.delivery-status"
INBOUND = "notify.sms.inbound"
RECEIPT_TIMES = ("completed_at", "sent_at", "created_at")


def plan(event: Event) -> list[Write]:
    """The writes of one event on the SMS queue."""
    if event.type == DELIVERY_STATUS:
        data = data_of(event)
        status = _required(data.get("status"), "status")
        write = MessageStatusWrite(
            _required(data.get("id"), "id"),
            _required(data.get("notification_type"), "notification_type"),
            status,
            version(event, tier=message_tier(status), time=_receipt_time(data)),
        )
        return [write]
    if event.type == INBOUND:
        data = data_of(event)
        received = _time(data, "date_received")
        inbound = InboundWrite(
            _required(data.get("id"), "id"),
            optional_str(data, "source_number"),
            optional_str(data, "destination_number"),
            optional_str(data, "message"),
            received if received is not None else event.effective_time,
            version(event),
        )
        return [inbound]
    return ignore(event, "sms")


def _receipt_time(data: dict[str, Any]) -> datetime | None:
    for name in RECEIPT_TIMES:
        moment = _time(data, name)
        if moment is not None:
            return moment
    return None


def _time(data: dict[str, Any], name: str) -> datetime | None:
    text = optional_str(data, name)
    if not text:
        return None
    try:
        return parse_time(text)
    except ValueError:
        raise Unprocessable(f"data.{name} is not an ISO 8601 time") from None


def _required(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise Unprocessable(f"data.{name} must be a non-empty string")
    return value


def make_handler(store: StateStore) -> Handler:
    """``plan`` applied to ``store`` one event at a time (a custom handler can reuse it)."""
    return applying(store, plan)
