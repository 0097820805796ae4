"""Decode what the broker delivers without letting one message break the connection.

pamqp, which aiormq reads frames with, raises on a property or header value it cannot decode:
a timestamp past the year 9999, a short string (``message_id``, ``type``, a header name...)
that is not UTF-8, tables nested thousands deep. aiormq then closes the whole connection: every
message in flight comes back, the same message is delivered again, and the worker never gets
past it (measured: a header holding the timestamp 2**63-1 did exactly that).

``install()`` puts tolerant decoders in pamqp's decoder tables. They return marked values
instead of raising: ``UndecodableTimestamp`` (a ``datetime`` clamped to ``datetime.max``),
``UndecodableText`` (a ``str`` holding each byte that is not UTF-8 as a lone surrogate,
U+DC80-U+DCFF, as ``surrogateescape`` does: no UTF-8 text decodes to one, so the mark
survives aio-pika's ``str()`` of the properties), and an ``UndecodableText`` in place of a
table or array nested deeper than ``MAX_DEPTH``. ``consumers.poison`` finds the marks and the
worker sends the message to ``.dlq``.

The fence: pamqp's decoder tables are module state, not API. ``install`` checks that they
hold the functions it replaces (pamqp 4) and otherwise leaves pamqp alone and says so in
the log; ``tests/test_worker_poison.py`` runs poisoned frames through the real broker.

Why the queue tools use ``consumers.lenient_frames`` instead: the two want opposite things
from the same bad bytes. A worker needs a value no handler can mistake for good data (lone
surrogates, a clamped time) so that ``consumers.poison`` dead-letters it, and it needs it on
aio-pika's connection at no per-frame cost; a tool lists and republishes the message, so it
needs values pamqp can encode again (``\\xNN`` text, the time as a number) and a header
naming the repair, on its own connection only. One decoder for both would either let surrogates
reach a replayed copy (pamqp cannot encode them) or let escaped text reach a handler.
"""

from __future__ import annotations

import contextvars
import datetime
import struct
from collections.abc import Callable
from typing import Any

from gateway.logs import get_logger

MAX_DEPTH = 32

log = get_logger("consumers.lenient_decoding")

_depth: contextvars.ContextVar[int] = contextvars.ContextVar("pamqp_table_depth", default=0)
_u8 = struct.Struct(">B")
_u32 = struct.Struct(">I")
_u64 = struct.Struct(">Q")
_installed = False


class UndecodableTimestamp(datetime.datetime):
    """A timestamp no ``datetime`` can hold, clamped to ``datetime.max``; ``raw`` is the
    value as sent."""

    raw: int = 0


class UndecodableText(str):
    """Text that was not UTF-8 (its bad bytes as lone surrogates), or a container nested too
    deep (shown as ``<table nested too deep>``)."""

    __slots__ = ()


Decoder = Callable[[bytes], tuple[int, Any]]


def install() -> bool:
    """Replace pamqp's timestamp, short-string, table and array decoders; idempotent.

    False (and a warning in the log) when pamqp's tables are not the ones this was written
    for: then a poisoned frame still closes the connection, as before.
    """
    global _installed
    if _installed:
        return True
    try:
        from pamqp import decode
    except ImportError:  # pragma: no cover - pamqp is aiormq's dependency
        return False
    methods, table = getattr(decode, "METHODS", None), getattr(decode, "TABLE_MAPPING", None)
    expected = {
        "timestamp": b"T",
        "table": b"F",
        "array": b"A",
        "shortstr": None,
    }
    if (
        not isinstance(methods, dict)
        or not isinstance(table, dict)
        or not all(
            callable(methods.get(name)) and (tag is None or callable(table.get(tag)))
            for name, tag in expected.items()
        )
    ):
        log.warning("pamqp decoders not as expected; lenient decoding not installed")
        return False
    embedded: Decoder = decode.embedded_value
    replacements: dict[str, tuple[bytes | None, Decoder]] = {
        "timestamp": (b"T", _timestamp),
        "shortstr": (None, _short_str),
        "table": (b"F", lambda data: _field_table(data, embedded)),
        "array": (b"A", lambda data: _field_array(data, embedded)),
    }
    for name, (tag, decoder) in replacements.items():
        methods[name] = decoder
        if tag is not None:
            table[tag] = decoder
    _installed = True
    return True


def _timestamp(value: bytes) -> tuple[int, datetime.datetime]:
    try:
        seconds: float = _u64.unpack(value[0:8])[0]
    except struct.error as err:
        raise ValueError("Could not unpack timestamp value") from err
    raw = int(seconds)
    if seconds > 0xFFFFFFFF:  # pamqp's rule: past the year 2106 it is milliseconds
        seconds /= 1000.0
    try:
        return 8, datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    except (OverflowError, ValueError, OSError):
        marked = UndecodableTimestamp(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)
        marked.raw = raw
        return 8, marked


def _short_str(value: bytes) -> tuple[int, str]:
    try:
        length = _u8.unpack(value[0:1])[0]
    except struct.error as err:
        raise ValueError("Could not unpack short string value") from err
    data = value[1 : length + 1]
    try:
        return length + 1, data.decode("utf-8")
    except UnicodeDecodeError:
        return length + 1, UndecodableText(data.decode("utf-8", "surrogateescape"))


def undecodable(text: str) -> bool:
    """Whether ``text`` came from bytes that were not UTF-8 (it holds a lone surrogate)."""
    return isinstance(text, UndecodableText) or (not text.isascii() and _has_surrogate(text))


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _too_deep(value: bytes, what: str) -> tuple[int, UndecodableText] | None:
    if _depth.get() < MAX_DEPTH:
        return None
    try:
        length = _u32.unpack(value[0:4])[0]
    except struct.error as err:
        raise ValueError(f"Could not unpack {what}") from err
    return 4 + length, UndecodableText(f"<{what} nested too deep>")


def _container(
    value: bytes,
    what: str,
    items: Callable[[bytes, int, Decoder], tuple[int, Any]],
    embedded: Decoder,
) -> tuple[int, Any]:
    """A table or array one level deeper: its length checked, then ``items`` reads up to its
    end (or a mark, past ``MAX_DEPTH``)."""
    skipped = _too_deep(value, what)
    if skipped is not None:
        return skipped
    token = _depth.set(_depth.get() + 1)
    try:
        length = _u32.unpack(value[0:4])[0]
        end = 4 + length
        if end > len(value):
            raise ValueError(f"Field {what} length exceeds available data")
        return items(value, end, embedded)
    except struct.error as err:
        raise ValueError("Could not unpack data") from err
    finally:
        _depth.reset(token)


def _field_table(value: bytes, embedded: Decoder) -> tuple[int, Any]:
    return _container(value, "table", _table_items, embedded)


def _field_array(value: bytes, embedded: Decoder) -> tuple[int, Any]:
    return _container(value, "array", _array_items, embedded)


def _table_items(value: bytes, end: int, embedded: Decoder) -> tuple[int, dict[str, Any]]:
    offset = 4
    data: dict[str, Any] = {}
    while offset < end:
        key_length = _u8.unpack_from(value, offset)[0]
        offset += 1
        if offset + key_length > end:
            raise ValueError("Field table key length exceeds data")
        _, key = _short_str(value[offset - 1 : offset + key_length])
        offset += key_length
        consumed, result = embedded(value[offset:])
        offset += consumed
        data[key] = result
    return end, data


def _array_items(value: bytes, end: int, embedded: Decoder) -> tuple[int, list[Any]]:
    offset = 4
    items: list[Any] = []
    while offset < end:
        consumed, result = embedded(value[offset:])
        offset += consumed
        items.append(result)
    return offset, items
