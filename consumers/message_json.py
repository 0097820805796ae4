"""What the queue tools print about a message, as JSON that any message can be turned into.

A body that is not JSON, a header that is bytes, a timestamp, a decimal: each becomes plain
JSON (``body`` as text, or ``body_base64``), so a malformed message is listed, never a crash.
Also the copy of a message's properties that a move republishes. Pure; no I/O.
"""

from __future__ import annotations

import base64
import datetime
import decimal
from collections.abc import Mapping
from typing import Any

import orjson
from pamqp import commands

from consumers.lenient_frames import UNDECODABLE_HEADER
from consumers.retry import _BROKER_HEADERS as BROKER_HEADERS
from gateway.cloudevent import rfc3339


def json_safe(value: Any) -> Any:
    """``value`` with everything JSON cannot hold turned into text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime.datetime):
        return rfc3339(value if value.tzinfo else value.replace(tzinfo=datetime.UTC))
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return str(value)


def text(value: Any) -> str | None:
    """A header or property as text (None when absent)."""
    if value is None:
        return None
    safe = json_safe(value)
    return safe if isinstance(safe, str) else orjson.dumps(safe).decode()


def parsed_body(body: bytes) -> tuple[Any, str | None]:
    """(the JSON value, None), or (None, why not) for a body that is not JSON."""
    try:
        return orjson.loads(body), None
    except orjson.JSONDecodeError as exc:
        return None, f"the body is not JSON: {exc}"


def raw_body(body: bytes) -> dict[str, str]:
    """``{"body": text}``, or ``{"body_base64": ...}`` when the bytes are not UTF-8."""
    try:
        return {"body": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"body_base64": base64.b64encode(body).decode("ascii")}


def undecodable(properties: commands.Basic.Properties) -> dict[str, str]:
    """``{"x-gateway-undecodable": why}`` for a message whose headers had to be repaired."""
    note = (properties.headers or {}).get(UNDECODABLE_HEADER)
    return {} if note is None else {UNDECODABLE_HEADER: text(note) or ""}


def json_line(value: Any) -> bytes:
    return orjson.dumps(value, default=json_safe) + b"\n"


def copied_properties(
    properties: commands.Basic.Properties,
    *,
    drop_headers: tuple[str, ...] = (),
    add_headers: Mapping[str, Any] | None = None,
) -> commands.Basic.Properties:
    """A persistent copy of ``properties`` for republishing: the headers the broker added
    (``x-death`` ...) and ``drop_headers`` removed, ``add_headers`` set; no expiration and no
    ``user_id`` (the broker checks it against the publishing user). Byte-string header values
    are kept as byte arrays (pamqp encodes those, not ``bytes``)."""
    headers = {
        name: _encodable(value)
        for name, value in (properties.headers or {}).items()
        if not name.startswith(BROKER_HEADERS) and name not in drop_headers
    }
    headers.update(add_headers or {})
    return commands.Basic.Properties(
        content_type=properties.content_type,
        content_encoding=properties.content_encoding,
        headers=headers or None,
        delivery_mode=2,
        priority=properties.priority,
        correlation_id=properties.correlation_id,
        reply_to=properties.reply_to,
        message_id=properties.message_id,
        timestamp=properties.timestamp
        if isinstance(properties.timestamp, datetime.datetime)
        else None,
        message_type=properties.message_type,
        app_id=properties.app_id,
    )


def _encodable(value: Any) -> Any:
    if isinstance(value, bytes):
        return bytearray(value)
    if isinstance(value, dict):
        return {k: _encodable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encodable(v) for v in value]
    return value
