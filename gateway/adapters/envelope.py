"""Steps every adapter shares: read the body as JSON, check CloudEvent attributes, stamp.

Checks raise ``BadRequest`` naming the offending field; ``prefix`` (``"[2]."`` in a batch)
says which event of a request it was.
"""

from __future__ import annotations

import binascii
import re
from typing import Any

import orjson

from gateway.adapters.context import Context
from gateway.adapters.errors import BadRequest
from gateway.cloudevent import SPECVERSION, CloudEvent, parse_time

# AMQP routing keys and message ids are short strings (at most 255 bytes); an event's type is
# its routing key and its id its message id.
MAX_TYPE_BYTES = MAX_ID_BYTES = 255
# orjson serialises at most 254 nested levels; an event adds one around its data, and the
# gateway must be able to publish whatever it accepted. 200 leaves room and no real payload
# comes near it.
MAX_DEPTH = 200
_BAD_TYPE_CHARACTER = re.compile(r"[\s\x00-\x1f\x7f]")
_REQUIRED_STRINGS = ("id", "source", "type")


def load_json(body: bytes) -> Any:
    """Parse the body; BadRequest when it is not JSON or nests deeper than ``MAX_DEPTH``."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("body is not valid JSON") from None
    # Nesting depth is at most the number of opening brackets: count them in C first, and
    # walk the parsed value only for the rare body that could be too deep.
    if (
        len(body) > 2 * MAX_DEPTH
        and body.count(b"[") + body.count(b"{") > MAX_DEPTH
        and _nests_deeper_than(value, MAX_DEPTH)
    ):
        raise BadRequest(f"body nests deeper than {MAX_DEPTH} levels")
    return value


def load_object(body: bytes) -> dict[str, Any]:
    """Parse a body that must be one JSON object."""
    value = load_json(body)
    if not isinstance(value, dict):
        raise BadRequest("body must be a JSON object")
    return value


def _nests_deeper_than(value: Any, limit: int) -> bool:
    if not isinstance(value, dict | list):
        return False
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False


def require_text(obj: dict[str, Any], name: str) -> str:
    """The member ``name``, which must be a non-empty string."""
    value = obj.get(name)
    if isinstance(value, str) and value:
        return value
    if value is None:
        raise BadRequest(f"missing required field {name}", field=name)
    raise BadRequest(f"{name} must be a non-empty string", field=name)


def check_time(value: Any, field: str) -> str:
    """An RFC 3339 timestamp string, returned unchanged."""
    if value is None:
        raise BadRequest(f"missing required field {field}", field=field)
    if not isinstance(value, str):
        raise BadRequest(f"{field} must be an RFC 3339 timestamp string", field=field)
    try:
        parse_time(value)
    except (ValueError, OverflowError):
        raise BadRequest(f"{field} is not an RFC 3339 timestamp", field=field) from None
    return value


def check_type(value: str, field: str) -> str:
    """A CloudEvent type usable as an AMQP routing key: no whitespace, at most 255 bytes."""
    if _BAD_TYPE_CHARACTER.search(value):
        raise BadRequest(f"{field} must not contain whitespace or control characters", field)
    return _short(value, MAX_TYPE_BYTES, field)


def check_id(value: str, field: str) -> str:
    """A CloudEvent id usable as the AMQP message id: at most 255 bytes of UTF-8."""
    return _short(value, MAX_ID_BYTES, field)


def _short(value: str, limit: int, field: str) -> str:
    if len(value) > limit or (
        not value.isascii() and len(value.encode("utf-8", "surrogatepass")) > limit
    ):
        raise BadRequest(f"{field} must be at most {limit} bytes", field=field)
    return value


def validate_event(event: dict[str, Any], prefix: str = "") -> CloudEvent:
    """Check a CloudEvent in structured JSON form in place, and return it.

    JSON ``null`` attributes are removed (absent), a numeric ``id`` becomes its decimal
    string; everything else, ``data`` included, is left as it came.
    """
    nulls = [name for name, value in event.items() if value is None and name != "data"]
    for name in nulls:
        del event[name]

    specversion = event.get("specversion")
    if specversion != SPECVERSION:
        field = prefix + "specversion"
        if specversion is None:
            raise BadRequest("missing required attribute specversion", field=field)
        raise BadRequest(f'specversion must be "{SPECVERSION}"', field=field)

    identifier = event.get("id")
    if type(identifier) is int:  # not bool, which is an int too
        event["id"] = str(identifier)
    for name in _REQUIRED_STRINGS:
        value = event.get(name)
        if not isinstance(value, str) or not value:
            field = prefix + name
            if value is None:
                raise BadRequest(f"missing required attribute {name}", field=field)
            raise BadRequest(f"{name} must be a non-empty string", field=field)
    check_id(event["id"], prefix + "id")
    check_type(event["type"], prefix + "type")

    if "time" in event:
        check_time(event["time"], prefix + "time")
    if "data_base64" in event:
        _check_data_base64(event, prefix)
    return event


def _check_data_base64(event: CloudEvent, prefix: str) -> None:
    field = prefix + "data_base64"
    if "data" in event:
        raise BadRequest("data and data_base64 are mutually exclusive", field=field)
    encoded = event["data_base64"]
    if not isinstance(encoded, str):
        raise BadRequest("data_base64 must be a Base64 string", field=field)
    try:
        binascii.a2b_base64(encoded, strict_mode=True)
    except (binascii.Error, ValueError):
        raise BadRequest("data_base64 is not valid Base64", field=field) from None


def stamp(event: CloudEvent, ctx: Context) -> CloudEvent:
    """Add what every event leaving the gateway carries: specversion and the gateway extensions.

    The gateway's own extensions overwrite any the sender put in.
    """
    event["specversion"] = SPECVERSION
    event["gatewaysource"] = ctx.source_name
    event["gatewayreceived"] = ctx.received
    return event
