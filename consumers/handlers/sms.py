"""Built-in handler for the ``sms`` queue: Notify SMS delivery receipts and inbound texts.

``notify.sms.delivery-status`` adds ``data.status`` to the message's history (``data.id`` is
Notify's id); ``notify.sms.inbound`` keeps the received text (never logged).
"""

from __future__ import annotations

from consumers.event import Event, Unprocessable
from consumers.handlers.camara import data_of, event_time, ignore, optional_str
from consumers.state import StateStore
from consumers.worker import Handler
from gateway.cloudevent import parse_time

DELIVERY_STATUS = "notify.sms.delivery-status"
INBOUND = "notify.sms.inbound"


def make_handler(store: StateStore) -> Handler:
    """The SMS handler over ``store``."""

    async def handle(event: Event) -> None:
        if event.type == DELIVERY_STATUS:
            data = data_of(event)
            await store.record_message_status(
                _required(data.get("id"), "id"),
                notification_type=_required(data.get("notification_type"), "notification_type"),
                status=_required(data.get("status"), "status"),
                time=event_time(event),
                event_id=event.id,
            )
        elif event.type == INBOUND:
            data = data_of(event)
            received = optional_str(data, "date_received")
            try:
                received_time = parse_time(received) if received else event.effective_time
            except ValueError:
                raise Unprocessable("data.date_received is not an ISO 8601 time") from None
            await store.record_inbound_sms(
                _required(data.get("id"), "id"),
                source_number=optional_str(data, "source_number"),
                destination_number=optional_str(data, "destination_number"),
                message=optional_str(data, "message"),
                received_time=received_time,
                event_id=event.id,
            )
        else:
            ignore(event, "sms")

    return handle


def _required(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise Unprocessable(f"data.{name} must be a non-empty string")
    return value
