"""CloudEvent -> AMQP 0-9-1 message, structured mode (contract §4). Pure; no I/O."""

from __future__ import annotations

from datetime import datetime

import orjson
from aio_pika import DeliveryMode, Message

from gateway.cloudevent import HEADER_ATTRIBUTES, CloudEvent

CONTENT_TYPE = "application/cloudevents+json"
APP_ID = "event-gateway"


def to_message(event: CloudEvent, received: datetime) -> Message:
    """The whole event as the JSON body; key attributes repeated as ``ce-*`` headers."""
    headers: dict[str, str] = {}
    for name in HEADER_ATTRIBUTES:
        value = event.get(name)
        if value is not None:
            headers[f"ce-{name}"] = str(value)
    return Message(
        orjson.dumps(event),
        content_type=CONTENT_TYPE,
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=str(event["id"]),
        type=str(event["type"]),
        timestamp=received,
        app_id=APP_ID,
        headers=headers,  # type: ignore[arg-type]
    )
