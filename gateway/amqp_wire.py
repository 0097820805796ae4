"""The AMQP 0-9-1 frames of one ``basic.publish``, encoded directly. Pure; no I/O.

pamqp, which aiormq uses, builds an object per frame and encodes every property through a
generic, validating encoder: tens of microseconds per message on the ingress's hot path. The
gateway publishes one shape of message (a few string properties, a table of string headers, a
timestamp), so this encodes exactly that shape with ``struct``, reusing the bytes that never
change. ``tests/test_amqp_wire.py`` decodes the result with pamqp and compares.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import NamedTuple

_FRAME_METHOD = 1
_FRAME_HEADER = 2
_FRAME_BODY = 3
_FRAME_END = b"\xce"
_BASIC = 60
_PUBLISH = 40
# Entries of each encoding cache (method frames by routing key, type properties by type):
# routing keys and message types are event types, a bounded set in practice.
_MAX_CACHED_ENCODINGS = 1024

_frame_start = struct.Struct(">BHI").pack
_header_start = struct.Struct(">HHQH").pack
_u32 = struct.Struct(">I").pack
_u64 = struct.Struct(">Q").pack

# Basic property flags (AMQP 0-9-1 §4.2.6.1: the first property is bit 15). The gateway
# always sets these, in this wire order; headers are added when there are any.
_CONTENT_TYPE = 1 << 15
_HEADERS = 1 << 13
_FLAGS = _CONTENT_TYPE | 1 << 12 | 1 << 7 | 1 << 6 | 1 << 5 | 1 << 3
# delivery-mode, message-id, timestamp, type, app-id
# Content header bytes besides the strings and the table: class, weight, body size and
# property flags (14), delivery mode (1), timestamp (8).
_HEADER_FIXED = 14 + 1 + 8


def shortstr(value: str) -> bytes:
    """An AMQP short string: one length byte, then at most 255 bytes of UTF-8."""
    data = value.encode()
    if len(data) > 255:
        raise ValueError(f"an AMQP short string holds at most 255 bytes: {value[:40]!r}...")
    return bytes((len(data),)) + data


def table_key(name: str) -> bytes:
    """A field-table key followed by the long-string type tag: the constant part of an entry."""
    return shortstr(name) + b"S"


def attribute_table(attributes: Mapping[str, object], keys: Iterable[tuple[str, bytes]]) -> bytes:
    """A field table of string values: the attributes named by ``keys`` (name, its key
    pre-encoded by ``table_key``) that are present and not None, each value as its ``str``.
    One loop over the keys, without a generator of pairs in between (the hot path's headers)."""
    parts: list[bytes] = []
    for name, key in keys:
        value = attributes.get(name)
        if value is not None:
            data = (value if type(value) is str else str(value)).encode()
            parts += (key, _u32(len(data)), data)
    encoded = b"".join(parts)
    return _u32(len(encoded)) + encoded


class Outgoing(NamedTuple):
    """One message to publish, its properties still as Python values (headers pre-encoded)."""

    exchange: str
    routing_key: str
    body: bytes
    content_type: str
    message_id: str
    message_type: str
    headers: bytes = b""  # an ``attribute_table``, or empty for none


class PublishEncoder:
    """Encodes publishes on one channel, reusing the bytes that repeat from message to message."""

    def __init__(
        self, channel: int, max_body_frame: int, *, delivery_mode: int, app_id: str
    ) -> None:
        self._channel = channel
        self._chunk = max_body_frame
        self._delivery_mode = bytes((delivery_mode,))
        self._app_id = shortstr(app_id)
        self._methods: dict[tuple[str, str], bytes] = {}
        self._content_types: dict[str, bytes] = {}
        self._message_types: dict[str, bytes] = {}

    def encode(self, message: Outgoing, timestamp: int) -> bytes:
        """Every frame of one publish; ``timestamp`` in seconds since the epoch.

        One ``join`` of every part (the content header's size is added up from its parts),
        so neither the header nor a single body frame is copied on its own first."""
        exchange, routing_key, body, content_type, message_id, message_type, headers = message
        method = self._methods.get((exchange, routing_key))
        if method is None:
            method = self._method_frame(exchange, routing_key)
        encoded_type = self._content_types.get(content_type)
        if encoded_type is None:
            encoded_type = self._content_types[content_type] = shortstr(content_type)
        encoded_id = shortstr(message_id)
        encoded_message_type = self._message_types.get(message_type)
        if encoded_message_type is None:
            encoded_message_type = self._message_type(message_type)
        flags = _FLAGS | _HEADERS if headers else _FLAGS
        header_size = (
            _HEADER_FIXED
            + len(encoded_type)
            + len(headers)
            + len(encoded_id)
            + len(encoded_message_type)
            + len(self._app_id)
        )
        channel = self._channel
        parts = [
            method,
            _frame_start(_FRAME_HEADER, channel, header_size),
            _header_start(_BASIC, 0, len(body), flags),
            encoded_type,
            headers,
            self._delivery_mode,
            encoded_id,
            _u64(timestamp),
            encoded_message_type,
            self._app_id,
            _FRAME_END,
        ]
        if 0 < len(body) <= self._chunk:
            parts += (_frame_start(_FRAME_BODY, channel, len(body)), body, _FRAME_END)
        elif body:
            parts.append(self._body_frames(body))
        return b"".join(parts)

    def _message_type(self, message_type: str) -> bytes:
        """``message_type`` as a short string, kept for the next message of that type (the
        gateway's are event types: a bounded set in practice)."""
        encoded = shortstr(message_type)
        if len(self._message_types) < _MAX_CACHED_ENCODINGS:
            self._message_types[message_type] = encoded
        return encoded

    def _method_frame(self, exchange: str, routing_key: str) -> bytes:
        """``basic.publish`` (mandatory and immediate off), kept for the next message to the
        same exchange and routing key: the gateway uses a handful of them."""
        payload = b"".join(
            (struct.pack(">HHH", _BASIC, _PUBLISH, 0), shortstr(exchange), shortstr(routing_key))
        )
        frame = _frame_start(_FRAME_METHOD, self._channel, len(payload) + 1) + payload + b"\0\xce"
        if len(self._methods) < _MAX_CACHED_ENCODINGS:
            self._methods[(exchange, routing_key)] = frame
        return frame

    def _body_frames(self, body: bytes) -> bytes:
        channel, chunk = self._channel, self._chunk
        if not body:
            return b""
        if len(body) <= chunk:
            return _frame_start(_FRAME_BODY, channel, len(body)) + body + _FRAME_END
        return b"".join(
            _frame_start(_FRAME_BODY, channel, len(part)) + part + _FRAME_END
            for part in (body[i : i + chunk] for i in range(0, len(body), chunk))
        )
