"""CloudEvent -> AMQP 0-9-1 message, structured mode (contract §4). Pure; no I/O.

``to_outgoing`` is the ingress hot path (``gateway.amqp_wire`` encodes it straight to frames);
``to_message`` is the same message as an aio-pika ``Message``, for everyone else.

An AMQP ``message_id`` is a short string (255 bytes); a CloudEvent id may have up to 1024, so
a longer id's message id is ``sha256:`` + the hex digest of its UTF-8 (``amqp_message_id``), while
``ce-id`` and the body keep it whole.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import orjson
from aio_pika import DeliveryMode, Message

from gateway.amqp_wire import Outgoing, attribute_table, table_key
from gateway.cloudevent import HEADER_ATTRIBUTES, TRACE_ATTRIBUTES, CloudEvent

CONTENT_TYPE = "application/cloudevents+json"
APP_ID = "event-gateway"
PERSISTENT = int(DeliveryMode.PERSISTENT)
_HEADER_NAMES = (
    *((name, f"ce-{name}") for name in HEADER_ATTRIBUTES),
    *((name, name) for name in TRACE_ATTRIBUTES),  # W3C names: what tracing tools read
)
_HEADER_KEYS = tuple((name, table_key(header)) for name, header in _HEADER_NAMES)
_MAX_SHORT_STRING = 255
# Bytes of a content header frame besides its variable parts: frame type, channel, size and
# end (8); class, weight, body size, property flags (14); the length bytes of content-type,
# message-id, type and app-id (4); delivery mode (1); timestamp (8); the table's length (4).
_HEADER_FRAME_FIXED = 8 + 14 + 4 + 1 + 8 + 4 + len(CONTENT_TYPE) + len(APP_ID)


def amqp_message_id(event_id: str) -> str:
    """The AMQP message id of an event: its id, or ``sha256:<hex>`` of an id over 255 bytes."""
    if len(event_id) <= _MAX_SHORT_STRING // 4:  # 4 bytes per character at most: fits
        return event_id
    encoded = event_id.encode()
    if len(encoded) <= _MAX_SHORT_STRING:
        return event_id
    return "sha256:" + hashlib.sha256(encoded).hexdigest()


def header_frame_size(event: CloudEvent) -> int:
    """Bytes of the content header frame ``to_outgoing``'s message is sent in, frame included."""
    size = _HEADER_FRAME_FIXED + _utf8_len(amqp_message_id(str(event["id"])))
    size += _utf8_len(str(event["type"]))
    for name, key in _HEADER_KEYS:
        value = event.get(name)
        if value is not None:
            size += len(key) + 4 + _utf8_len(str(value))
    return size


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def ce_headers(event: CloudEvent) -> dict[str, str]:
    """The attributes repeated as ``ce-*`` headers, for header-based filtering, and the trace
    context as ``traceparent``/``tracestate``."""
    return {
        header: str(event[name]) for name, header in _HEADER_NAMES if event.get(name) is not None
    }


def to_outgoing(exchange: str, event: CloudEvent) -> Outgoing:
    """The event's message as the ingress publishes it (``gateway.amqp_wire`` encodes it):
    the same properties and headers as ``to_message``."""
    event_type = str(event["type"])
    return Outgoing(
        exchange,
        event_type,
        orjson.dumps(event),
        CONTENT_TYPE,
        amqp_message_id(str(event["id"])),
        event_type,
        attribute_table(event, _HEADER_KEYS),
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
        message_id=amqp_message_id(str(event["id"])),
        type=str(event["type"]),
        timestamp=received,
        app_id=APP_ID,
        headers=ce_headers(event),  # type: ignore[arg-type]
    )
