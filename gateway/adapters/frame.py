"""Whether an event's AMQP header frame fits the broker connection's frame size.

A frame larger than the negotiated ``frame_max`` makes RabbitMQ close the whole connection
(``FRAME_ERROR frame_too_large``), and with it every publish of every request in flight. The
body is split into frames of any size, but the content header (properties and the ``ce-*``
headers) must fit one. The attribute limits keep it under ``ALWAYS_FITS`` bytes, so with
RabbitMQ's default frame size (128 KiB) nothing is computed per event; only a broker set to a
smaller one pays for the exact size.
"""

from __future__ import annotations

from gateway.adapters.attributes import MAX_ATTRIBUTE_BYTES, MAX_ID_BYTES, MAX_TYPE_BYTES
from gateway.adapters.errors import BadRequest
from gateway.amqp_message import header_frame_size
from gateway.cloudevent import HEADER_ATTRIBUTES, TRACE_ATTRIBUTES, CloudEvent

# The largest header frame an event within the attribute limits can need.
_LARGEST_EVENT: CloudEvent = {
    name: "x" * MAX_ATTRIBUTE_BYTES for name in (*HEADER_ATTRIBUTES, *TRACE_ATTRIBUTES)
} | {
    "id": "x" * MAX_ID_BYTES,
    "type": "x" * MAX_TYPE_BYTES,
}
ALWAYS_FITS = header_frame_size(_LARGEST_EVENT)


def check_frame(event: CloudEvent, frame_max: int, prefix: str = "") -> None:
    """BadRequest, naming the largest header attribute, when the event's header frame is
    larger than ``frame_max`` (0 means the broker sets no limit)."""
    if frame_max == 0 or frame_max >= ALWAYS_FITS:
        return
    size = header_frame_size(event)
    if size <= frame_max:
        return
    largest = max(
        (
            name
            for name in (*HEADER_ATTRIBUTES, *TRACE_ATTRIBUTES)
            if isinstance(event.get(name), str)
        ),
        key=lambda name: len(event[name]),
    )
    raise BadRequest(
        f"the event's AMQP headers need a {size}-byte frame and the broker takes at most "
        f"{frame_max}: shorten {largest}",
        field=prefix + largest,
    )
