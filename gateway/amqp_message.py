"""CloudEvent -> AMQP 0-9-1 message, structured mode (contract §4). Pure; no I/O.

``to_outgoing`` is the ingress hot path (``gateway.amqp_wire`` encodes it straight to frames);
``to_message`` is the same message as an aio-pika ``Message``, for everyone else.
"""

from __future__ import annotations

from datetime import datetime

import orjson
from aio_pika import DeliveryMode, Message

from gateway.amqp_wire import Outgoing, string_table, table_key
from gateway.cloudevent import HEADER_ATTRIBUTES, CloudEvent

CONTENT_TYPE = "application/cloudevents+json"
APP_ID = "event-gateway"
PERSISTENT = int(DeliveryMode.PERSISTENT)
_HEADER_NAMES = tuple((name, f"ce-{name}") for name in HEADER_ATTRIBUTES)
_HEADER_KEYS = tuple((name, table_key(header)) for name, header in _HEADER_NAMES)


def ce_headers(event: CloudEvent) -> dict[str, str]:
    """The attributes repeated as ``ce-*`` headers, for header-based filtering."""
    return {
        header: str(event[name]) for name, header in _HEADER_NAMES if event.get(name) is not None
    }


def to_outgoing(exchange: str, event: CloudEvent) -> Outgoing:
    """The event's message as the ingress publishes it (``gateway.amqp_wire`` encodes it):
    the same properties and headers as ``to_message``."""
    event_type = str(event["type"])
    headers = string_table(
        (key, str(event[name])) for name, key in _HEADER_KEYS if event.get(name) is not None
    )
    return Outgoing(
        exchange,
        event_type,
        orjson.dumps(event),
        CONTENT_TYPE,
        str(event["id"]),
        event_type,
        headers,
    )


def to_body(event: CloudEvent) -> bytes:
    """The event in structured JSON form."""
    return orjson.dumps(event)


def to_message(event: CloudEvent, received: datetime) -> Message:
    """The whole event as the JSON body; key attributes repeated as ``ce-*`` headers."""
    return Message(
        to_body(event),
        content_type=CONTENT_TYPE,
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=str(event["id"]),
        type=str(event["type"]),
        timestamp=received,
        app_id=APP_ID,
        headers=ce_headers(event),  # type: ignore[arg-type]
    )
