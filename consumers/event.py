"""The typed event a handler receives: a read-only view of one CloudEvent from the queue.

Errors:
    Unprocessable: raised by a handler for an event that can never succeed (a device-state
    event without a device, a field of the wrong type). The worker does not retry it: it
    goes straight to ``<queue>.dlq``.
    InvalidEvent: the message body is not a CloudEvent in structured JSON form (not JSON,
    not an object, a required attribute missing or of the wrong type). A kind of
    ``Unprocessable``, so such a message is dead-lettered at once too.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

import orjson

from gateway.cloudevent import SPECVERSION, parse_time

_STRING_ATTRIBUTES = ("subject", "datacontenttype", "partitionkey")
_KNOWN = frozenset(
    {"id", "source", "type", "specversion", "time", "data", "data_base64", *_STRING_ATTRIBUTES}
)
RECEIVED_EXTENSION = "gatewayreceived"
SOURCE_EXTENSION = "gatewaysource"


class Unprocessable(Exception):
    """This event can never be handled: dead-letter it without retrying."""


class InvalidEvent(Unprocessable):
    """The message body is not a structured-mode CloudEvent."""


@dataclass(frozen=True, slots=True)
class Event:
    """One CloudEvent 1.0. ``data`` is the decoded JSON value (``bytes`` for ``data_base64``);
    every attribute that is not a core one (``gatewaysource``, ``gatewayreceived``, ...) is in
    ``extensions``."""

    id: str
    source: str
    type: str
    specversion: str = SPECVERSION
    time: datetime | None = None
    subject: str | None = None
    datacontenttype: str | None = None
    partitionkey: str | None = None
    data: Any = None
    extensions: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_body(cls, body: bytes) -> Event:
        """Parse a message body; raises InvalidEvent naming what is wrong."""
        try:
            raw = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidEvent(f"body is not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise InvalidEvent("body is not a JSON object")
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Event:
        """Build from the structured JSON form; a ``null`` attribute counts as absent."""
        attrs = {name: value for name, value in raw.items() if value is not None}
        specversion = attrs.get("specversion")
        if specversion != SPECVERSION:
            raise InvalidEvent(f"specversion must be {SPECVERSION!r}, not {specversion!r}")
        event_id = attrs.get("id")
        if isinstance(event_id, int) and not isinstance(event_id, bool):
            event_id = str(event_id)
        for name, value in (
            ("id", event_id),
            ("source", attrs.get("source")),
            ("type", attrs.get("type")),
        ):
            if not isinstance(value, str) or not value:
                raise InvalidEvent(f"attribute {name!r} must be a non-empty string")
        for name in _STRING_ATTRIBUTES:
            if name in attrs and not isinstance(attrs[name], str):
                raise InvalidEvent(f"attribute {name!r} must be a string")
        time = _time(attrs.get("time"), "time")
        data = raw.get("data")
        if "data_base64" in attrs:
            if "data" in raw:
                raise InvalidEvent("'data' and 'data_base64' are mutually exclusive")
            data = _base64(attrs["data_base64"])
        extensions = {name: value for name, value in attrs.items() if name not in _KNOWN}
        return cls(
            id=str(event_id),
            source=attrs["source"],
            type=attrs["type"],
            specversion=SPECVERSION,
            time=time,
            subject=attrs.get("subject"),
            datacontenttype=attrs.get("datacontenttype"),
            partitionkey=attrs.get("partitionkey"),
            data=data,
            extensions=MappingProxyType(extensions),
        )

    @property
    def received(self) -> datetime | None:
        """When the gateway received the event (the ``gatewayreceived`` extension), if known."""
        value = self.extensions.get(RECEIVED_EXTENSION)
        if not isinstance(value, str):
            return None
        try:
            return parse_time(value)
        except ValueError:
            return None

    @property
    def effective_time(self) -> datetime | None:
        """The event's ``time``, else when the gateway received it."""
        return self.time if self.time is not None else self.received


def _time(value: Any, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEvent(f"attribute {name!r} must be an RFC 3339 string")
    try:
        return parse_time(value)
    except ValueError:
        raise InvalidEvent(f"attribute {name!r} is not an RFC 3339 timestamp: {value!r}") from None


def _base64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise InvalidEvent("'data_base64' must be a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidEvent("'data_base64' is not valid Base64") from None
