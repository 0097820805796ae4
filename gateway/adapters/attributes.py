"""CloudEvent attribute limits and types (contract §7): what an event may carry to the broker.

Every attribute of an event the gateway publishes is checked once, on the finished event
(``check_attributes``), so every adapter and every path through one is covered:

* ``id`` at most 1024 bytes, ``type`` at most 255 (it is the routing key), every other string
  attribute at most 4096: they travel in the AMQP header frame, which must fit the broker's
  frame size, or the broker closes the connection every request shares;
* at most ``MAX_ATTRIBUTES`` attributes (the gateway's own two not counted), extension names
  of ``a-z`` and ``0-9`` only;
* values of their CloudEvents type: the core and known extension attributes are strings, any
  other extension a string, an Integer (32-bit) or a Boolean; strings hold no control
  characters, surrogates or noncharacters (CloudEvents' String type);
* ``time`` RFC 3339, years 0001 to 9999 also in UTC, at most 9 fraction digits, and not
  further ahead of the receive time than the source allows.

Checks raise ``BadRequest`` naming the field; ``prefix`` (``"[2]."``) says which event of a
batch it was. Cheap on purpose: they run on every event of the hot path.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from gateway.adapters.errors import BadRequest
from gateway.cloudevent import parse_time

MAX_ID_BYTES = 1024
MAX_TYPE_BYTES = 255  # an AMQP routing key is a short string
MAX_ATTRIBUTE_BYTES = 4096
MAX_ATTRIBUTES = 64
MAX_NAME_CHARS = 64  # CloudEvents: "SHOULD NOT exceed 20"; this only keeps names sane
MAX_FRACTION_DIGITS = 9
INT32 = (-(2**31), 2**31 - 1)

GATEWAY_ATTRIBUTES = frozenset({"gatewaysource", "gatewayreceived"})
# Not attributes: the event's payload, in one of its two JSON forms.
PAYLOAD = frozenset({"data", "data_base64"})
# Attributes whose type is String (or URI, URI-reference, Timestamp: strings in JSON).
STRING_ATTRIBUTES = frozenset(
    {
        "id",
        "source",
        "type",
        "specversion",
        "datacontenttype",
        "dataschema",
        "subject",
        "time",
        "partitionkey",
        "xcorrelator",
        *GATEWAY_ATTRIBUTES,
    }
)
_SKIP = -1
# The byte limit of each known String attribute; _SKIP for the payload and the gateway's own.
_STRING_LIMITS: dict[str, int] = (
    dict.fromkeys(STRING_ATTRIBUTES, MAX_ATTRIBUTE_BYTES)
    | {"id": MAX_ID_BYTES, "type": MAX_TYPE_BYTES}
    | dict.fromkeys(PAYLOAD | GATEWAY_ATTRIBUTES, _SKIP)
)
_NAME = re.compile(r"[a-z0-9]+")
_NONCHARACTERS = "".join(chr(plane << 16 | low) for plane in range(17) for low in (0xFFFE, 0xFFFF))
# CloudEvents String: no C0/C1 controls, no surrogate code points, no noncharacters.
_NOT_STRING = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f\\ud800-\\udfff\\ufdd0-\\ufdef{_NONCHARACTERS}]")
_ROUTING_KEY_SPACE = re.compile(r"\s")


def text_fault(value: str, limit: int) -> str | None:
    """Why ``value`` is not a CloudEvents String of at most ``limit`` UTF-8 bytes, or None."""
    if len(value) > limit or (
        not value.isascii() and len(value.encode("utf-8", "surrogatepass")) > limit
    ):
        return f"must be at most {limit} bytes"
    # isprintable() is C-fast and true for nearly every real value; the exact rule only runs
    # when it is false (it also is for spaces other than U+0020 and format characters).
    if not value.isprintable() and _NOT_STRING.search(value):
        return "must not contain control characters, surrogates or noncharacters"
    return None


def check_text(value: str, limit: int, field: str) -> str:
    """``value`` when it is a CloudEvents String of at most ``limit`` bytes; else BadRequest."""
    fault = text_fault(value, limit)
    if fault is not None:
        raise BadRequest(f"{field} {fault}", field=field)
    return value


def check_id(value: str, field: str) -> str:
    """A CloudEvent id: at most 1024 bytes (the AMQP message id is its digest past 255)."""
    return check_text(value, MAX_ID_BYTES, field)


def check_type(value: str, field: str) -> str:
    """A CloudEvent type usable as an AMQP routing key: no whitespace, at most 255 bytes."""
    check_text(value, MAX_TYPE_BYTES, field)
    _check_routing_key(value, field)
    return value


def _check_routing_key(value: str, field: str) -> None:
    if " " in value or (not value.isprintable() and _ROUTING_KEY_SPACE.search(value)):
        raise BadRequest(f"{field} must not contain whitespace", field=field)


def parse_event_time(value: str, field: str) -> datetime:
    """An RFC 3339 timestamp the gateway and its workers can hold, as an aware datetime.

    Years 0001 to 9999, in the time's own offset and in UTC (``9999-12-31T23:00:00-05:00`` is
    past year 9999: no store could keep it); at most 9 fraction digits.
    """
    try:
        moment = parse_time(value)
    except (ValueError, OverflowError):
        raise BadRequest(f"{field} is not an RFC 3339 timestamp", field=field) from None
    dot = value.find(".")
    if dot != -1:
        zone = 1 if value[-1] in "Zz" else 6
        if len(value) - zone - dot - 1 > MAX_FRACTION_DIGITS:
            raise BadRequest(
                f"{field} has more than {MAX_FRACTION_DIGITS} fraction digits", field=field
            )
    if moment.year in (1, 9999):
        try:
            moment.astimezone(UTC)
        except OverflowError:
            raise BadRequest(f"{field} is outside years 0001 to 9999 in UTC", field=field) from None
    return moment


def check_time(value: Any, field: str) -> str:
    """An RFC 3339 timestamp string (see ``parse_event_time``), returned unchanged."""
    if value is None:
        raise BadRequest(f"missing required field {field}", field=field)
    if not isinstance(value, str):
        raise BadRequest(f"{field} must be an RFC 3339 timestamp string", field=field)
    parse_event_time(value, field)
    return value


def check_attributes(event: dict[str, Any], latest: datetime | None, prefix: str = "") -> None:
    """Check every attribute of a finished event (see the module docstring).

    ``latest`` is the latest ``time`` accepted (receive time plus the source's skew), or None
    for no bound.
    """
    if len(event) > MAX_ATTRIBUTES:  # the count is never more than len: usually nothing to do
        keys = event.keys()
        count = len(event) - len(PAYLOAD & keys) - len(GATEWAY_ATTRIBUTES & keys)
        if count > MAX_ATTRIBUTES:
            raise BadRequest(
                f"an event carries at most {MAX_ATTRIBUTES} attributes, this one {count}",
                field=prefix.rstrip(".") or None,
            )
    for name, value in event.items():
        limit = _STRING_LIMITS.get(name)
        if limit is None:
            _check_extension(name, value, prefix)
            continue
        if limit == _SKIP:
            continue
        if type(value) is not str:
            raise BadRequest(f"{name} must be a string", field=prefix + name)
        # Short printable ASCII, nearly every value, needs nothing more.
        if len(value) > limit or not value.isascii() or not value.isprintable():
            fault = text_fault(value, limit)
            if fault is not None:
                raise BadRequest(f"{name} {fault}", field=prefix + name)
        if name == "time":
            _check_event_time(value, latest, prefix + name)
        elif name == "type":
            _check_routing_key(value, prefix + name)


def _check_extension(name: str, value: Any, prefix: str) -> None:
    if len(name) > MAX_NAME_CHARS or not _NAME.fullmatch(name):
        raise BadRequest(
            f"attribute names are lower-case letters a-z and digits 0-9, at most "
            f"{MAX_NAME_CHARS} of them; {name[:MAX_NAME_CHARS]!r} is not one",
            field=prefix + name[:MAX_NAME_CHARS],
        )
    if type(value) is str:
        fault = text_fault(value, MAX_ATTRIBUTE_BYTES)
        if fault is not None:
            raise BadRequest(f"{name} {fault}", field=prefix + name)
    elif type(value) is int:
        if not INT32[0] <= value <= INT32[1]:
            raise BadRequest(f"{name} is outside the 32-bit Integer range", prefix + name)
    elif type(value) is not bool:
        raise BadRequest(
            f"extension {name} must be a string, an integer or a boolean", prefix + name
        )


def _check_event_time(value: str, latest: datetime | None, field: str) -> None:
    moment = parse_event_time(value, field)
    if latest is not None and moment > latest:
        raise BadRequest(
            f"{field} is further ahead of the receive time than this source allows", field=field
        )
