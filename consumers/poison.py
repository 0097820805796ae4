"""What a delivered message carries that no handler should see: checked before parsing.

Errors:
    MalformedMessage: a header, property or body the worker cannot trust; the message goes
    to ``.dlq`` at once (``Unprocessable``), with the reason in ``x-gateway-error``.

``consumers.lenient_decoding`` marks what pamqp could not decode; ``check`` turns a mark, a
bad ``x-gateway-attempts`` or a body that is no CloudEvent into one of these errors.
``encodable_headers`` keeps the headers that pamqp can encode again, so the copy that takes
a message to its retry queue or ``.dlq`` can always be published.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aio_pika.abc import AbstractMessage

from consumers.event import Unprocessable
from consumers.lenient_decoding import UndecodableText, UndecodableTimestamp, undecodable

PROPERTIES = (
    "content_type",
    "content_encoding",
    "correlation_id",
    "reply_to",
    "message_id",
    "type",
    "user_id",
    "app_id",
    "timestamp",
)
MAX_WALK = 10_000  # header values looked at, at most (a table may hold many)


class MalformedMessage(Unprocessable):
    """A header, property or body of a delivered message cannot be trusted."""


def check(message: AbstractMessage) -> None:
    """Raise MalformedMessage naming the first undecodable property or header."""
    for name in PROPERTIES:
        value = getattr(message, name, None)
        if isinstance(value, UndecodableTimestamp) or (
            isinstance(value, str) and undecodable(value)
        ):
            raise MalformedMessage(f"property {name} could not be decoded: {_what(value)}")
    headers = message.headers
    if headers:
        found = _first_mark(headers)
        if found is not None:
            raise MalformedMessage(f"header {found} could not be decoded")


def _what(value: Any) -> str:
    if isinstance(value, UndecodableTimestamp):
        return f"timestamp {value.raw} is out of range"
    shown = str(value)[:60].encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return f"{shown!r} is not UTF-8"


def _first_mark(headers: Mapping[str, Any]) -> str | None:
    """The path of the first marked key or value (``name`` or ``name[2].key``), if any."""
    for key in headers:
        if isinstance(key, UndecodableText):
            return f"name {_what(key)}"
    stack: list[tuple[str, Any]] = [(repr(key), value) for key, value in headers.items()]
    seen = 0
    while stack and seen < MAX_WALK:
        path, value = stack.pop()
        seen += 1
        if isinstance(value, UndecodableText | UndecodableTimestamp):
            return f"{_cut(path)} ({_what(value)})"
        if isinstance(value, Mapping):
            for key, item in value.items():
                if isinstance(key, UndecodableText):
                    return f"{_cut(path)} (a key {_what(key)})"
                stack.append((f"{path}.{key!r}", item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{n}]", item) for n, item in enumerate(value))
    return None


def _cut(path: str) -> str:
    return path if len(path) <= 80 else path[:77] + "..."


def encodable_headers(headers: Mapping[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """(the headers pamqp can encode, the names of the ones it cannot)."""
    from pamqp import encode

    if not headers:
        return {}, []
    try:
        encode.field_table(dict(headers))
        return dict(headers), []
    except Exception:  # find out which ones below
        kept: dict[str, Any] = {}
    dropped: list[str] = []
    for name, value in headers.items():
        try:
            encode.field_table({name: value})
        except Exception:
            dropped.append(_cut(repr(name)))
        else:
            kept[name] = value
    return kept, dropped
