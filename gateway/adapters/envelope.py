"""Steps every adapter shares: read the body as JSON, check CloudEvent attributes, stamp.

Checks raise ``BadRequest`` naming the offending field; ``prefix`` (``"[2]."`` in a batch)
says which event of a request it was. ``stamp`` is every adapter's last step, so it checks
the finished event against the attribute limits (``gateway.adapters.attributes``) and the
broker's frame size (``gateway.adapters.frame``).
"""

from __future__ import annotations

import binascii
from typing import Any

import orjson

from gateway.adapters.attributes import (
    MAX_ID_BYTES,
    MAX_TYPE_BYTES,
    check_attributes,
    check_id,
    check_time,
    check_type,
)
from gateway.adapters.context import Context
from gateway.adapters.errors import BadRequest
from gateway.adapters.frame import check_frame
from gateway.cloudevent import SPECVERSION, CloudEvent

__all__ = [
    "MAX_DEPTH",
    "MAX_ID_BYTES",
    "MAX_TYPE_BYTES",
    "check_id",
    "check_time",
    "check_type",
    "load_json",
    "load_object",
    "require_text",
    "stamp",
    "validate_event",
]

# orjson serialises at most 254 nested levels; an event adds one around its data, and the
# gateway must be able to publish whatever it accepted. 200 leaves room and no real payload
# comes near it.
MAX_DEPTH = 200
_REQUIRED_STRINGS = ("id", "source", "type")
# How JSON writes U+0000 (JSON text cannot hold it raw): PostgreSQL text and jsonb cannot
# store it, so neither could the built-in workers nor most consumers.
_ESCAPED_NUL = b"\\u0000"
_MAX_PATH_CHARS = 200


def load_json(body: bytes, where: str = "") -> Any:
    """Parse the body; BadRequest when it is not JSON, nests deeper than ``MAX_DEPTH`` or
    holds a U+0000 anywhere (named by its path; ``where`` is the body's own, e.g. ``data``)."""
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
    if _ESCAPED_NUL in body:  # rare: a C search; only then find where it is
        path = _nul_path(value, where)
        if path is not None:
            raise BadRequest(
                "U+0000 (NUL) cannot be stored: refused in any string or member name",
                field=path[:_MAX_PATH_CHARS] or None,  # member names are the sender's
            )
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


def _nul_path(value: Any, where: str) -> str | None:
    """The path of the first string (or object, for a member name) holding U+0000, else None."""
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return path
        elif isinstance(node, dict):
            for key, child in node.items():
                if "\x00" in key:
                    return path
                stack.append((child, f"{path}.{key}" if path else key))
        elif isinstance(node, list):
            stack.extend((child, f"{path}[{index}]") for index, child in enumerate(node))
    return None


def require_text(obj: dict[str, Any], name: str) -> str:
    """The member ``name``, which must be a non-empty string."""
    value = obj.get(name)
    if isinstance(value, str) and value:
        return value
    if value is None:
        raise BadRequest(f"missing required field {name}", field=name)
    raise BadRequest(f"{name} must be a non-empty string", field=name)


def validate_event(event: dict[str, Any], prefix: str = "") -> CloudEvent:
    """Check a CloudEvent in structured JSON form in place, and return it.

    JSON ``null`` attributes are removed (absent), a numeric ``id`` becomes its decimal
    string; everything else, ``data`` included, is left as it came. The attributes' limits
    and types are checked by ``stamp``, on the finished event.
    """
    if None in event.values():  # rare: one scan in C before looking for which ones
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


def stamp(event: CloudEvent, ctx: Context, prefix: str = "") -> CloudEvent:
    """Add what every event leaving the gateway carries: specversion and the gateway
    extensions; then check the finished event's attributes and its AMQP header's size.

    The gateway's own extensions overwrite any the sender put in.
    """
    event["specversion"] = SPECVERSION
    event["gatewaysource"] = ctx.source_name
    event["gatewayreceived"] = ctx.received
    if ctx.traceparent is not None and "traceparent" not in event:
        event["traceparent"] = ctx.traceparent
        if ctx.tracestate is not None:
            event["tracestate"] = ctx.tracestate
    check_attributes(event, ctx.latest_time, prefix)
    check_frame(event, ctx.frame_max, prefix)
    return event
