"""Content headers that pamqp refuses, repaired before aiormq reads them (queue tools only).

RabbitMQ passes message properties through without checking their text: a header name or a
short string that is not UTF-8, or a timestamp past the year 9999, reaches every consumer.
pamqp raises on them and aiormq then closes the whole connection, so one such message in a
dead-letter queue would stop every ``dlq list`` and ``dlq replay`` (contract §9: malformed
messages are listed). ``LenientTransportFactory`` opens the socket as aiormq would and hands
aiormq a reader that checks each content-header frame with pamqp first; only a frame pamqp
refuses is decoded leniently (bad text becomes ``\\xNN`` escapes, an impossible timestamp its
number, an undecodable table one explanatory entry) and re-encoded, with the header
``x-gateway-undecodable`` saying what was repaired. Every other frame passes unchanged.

Fenced: only the queue tools use it (not the ingress or the workers), it relies only on
aiormq's public ``TransportFactory`` and the reader methods aiormq's frame reader calls
(``readexactly``, ``read``, ``at_eof``), and ``tests/test_dlq.py`` lists a message with such
headers through it.

Why not ``consumers.lenient_decoding`` (the workers' patch of pamqp's decoder tables): that
one marks bad text with lone surrogates so the worker dead-letters the message, and pamqp
cannot encode such text again, while a tool must republish what it lists; and it changes
every connection of the process, while this one changes only the tool's connection and only
the frames pamqp refuses. The walk of tables and arrays is alike in both; the values each
produces are not.
"""

from __future__ import annotations

import asyncio
import datetime
import struct
from typing import Any

from aiormq.connection import TCPTransportFactory, TLSTransportFactory, TransportFactory
from pamqp import commands, decode
from pamqp.header import ContentHeader
from yarl import URL

UNDECODABLE_HEADER = "x-gateway-undecodable"
_FRAME_HEAD = struct.Struct(">BHI")
_FRAME_CONTENT_HEADER = 2


class LenientTransportFactory(TransportFactory):
    """TCP or TLS as aiormq would open them, read through ``RepairingReader``."""

    async def create(self, url: URL, **kwargs: Any) -> tuple[Any, asyncio.StreamWriter]:
        factory = TLSTransportFactory() if url.scheme == "amqps" else TCPTransportFactory()
        reader, writer = await factory.create(url, **kwargs)
        return RepairingReader(reader), writer


class RepairingReader:
    """Hands out the broker's bytes frame by frame, repairing content headers pamqp refuses."""

    def __init__(self, inner: asyncio.StreamReader) -> None:
        self._inner = inner
        self._ready = bytearray()

    def at_eof(self) -> bool:
        return not self._ready and self._inner.at_eof()

    async def read(self, n: int = -1) -> bytes:
        if self._ready:
            out = bytes(self._ready if n < 0 else self._ready[:n])
            del self._ready[: len(out)]
            return out
        return await self._inner.read(n)

    async def readexactly(self, n: int) -> bytes:
        while len(self._ready) < n:
            await self._next_frame()
        out = bytes(self._ready[:n])
        del self._ready[:n]
        return out

    async def _next_frame(self) -> None:
        head = await self._inner.readexactly(_FRAME_HEAD.size)
        if head.startswith(b"AMQP"):  # the broker refused our protocol version: pass it on
            self._ready += head + await self._inner.readexactly(8 - len(head))
            return
        frame_type, channel, size = _FRAME_HEAD.unpack(head)
        payload = await self._inner.readexactly(size)
        end = await self._inner.readexactly(1)
        if frame_type == _FRAME_CONTENT_HEADER:
            repaired = repair_content_header(payload)
            if repaired is not payload:
                head, payload = _FRAME_HEAD.pack(frame_type, channel, len(repaired)), repaired
        self._ready += head + payload + end


def repair_content_header(payload: bytes) -> bytes:
    """``payload`` itself when pamqp decodes it, else an equivalent pamqp can decode."""
    try:
        ContentHeader().unmarshal(payload)
    except Exception as exc:  # whatever pamqp raises on it: repair below
        problem = f"{type(exc).__name__}: {exc}"
    else:
        return payload
    try:
        _, weight, body_size = struct.unpack(">HHQ", payload[:12])
        offset, flags = ContentHeader._get_flags(payload[12:])
        properties = _lenient_properties(flags, payload[12 + offset :], problem)
        return ContentHeader(weight, body_size, properties).marshal()
    except Exception:  # beyond repair: aiormq reports it as it always did
        return payload


def _lenient_properties(flags: int, data: bytes, problem: str) -> commands.Basic.Properties:
    properties = commands.Basic.Properties()
    for name in properties.__slots__:
        if not flags & properties.flags[name]:
            continue
        kind = getattr(commands.Basic.Properties, "_" + name)
        consumed, value = _decode(data, kind)
        setattr(properties, name, value)
        data = data[consumed:]
    headers = properties.headers if isinstance(properties.headers, dict) else {}
    headers[UNDECODABLE_HEADER] = " ".join(problem.split())[:500]
    properties.headers = headers
    if properties.delivery_mode not in (None, 1, 2):
        properties.delivery_mode = 2
    if not isinstance(properties.timestamp, datetime.datetime | None):
        headers["x-gateway-timestamp"] = properties.timestamp  # what it was, as text
        properties.timestamp = None
    return properties


def _decode(data: bytes, kind: str) -> tuple[int, Any]:
    if kind == "shortstr":
        return _short_text(data, 0)
    if kind == "table":
        try:
            return _table(data)
        except Exception as exc:  # skip the whole table, keep a note of why
            (length,) = struct.unpack(">I", data[:4])
            return 4 + length, {"x-gateway-undecodable-table": f"{type(exc).__name__}: {exc}"}
    if kind == "timestamp":
        return _timestamp(data)
    return decode.by_type(data, kind)


def _short_text(data: bytes, offset: int) -> tuple[int, str]:
    length = data[offset]
    text = data[offset + 1 : offset + 1 + length].decode("utf-8", "backslashreplace")
    return 1 + length, text


def _timestamp(data: bytes) -> tuple[int, Any]:
    """A datetime, or for one Python cannot hold, its number as text (a u64 may not fit the
    signed integers a table can carry)."""
    (seconds,) = struct.unpack(">Q", data[:8])
    try:
        return 8, datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return 8, f"{seconds} (not a valid time)"


def _table(data: bytes) -> tuple[int, dict[str, Any]]:
    (length,) = struct.unpack(">I", data[:4])
    end = 4 + length
    if end > len(data):
        raise ValueError("field table length exceeds the frame")
    offset, table = 4, {}
    while offset < end:
        consumed, key = _short_text(data, offset)
        offset += consumed
        consumed, table[key] = _value(data[offset:end])
        offset += consumed
    return end, table


def _array(data: bytes) -> tuple[int, list[Any]]:
    (length,) = struct.unpack(">I", data[:4])
    end = 4 + length
    offset, items = 4, []
    while offset < end:
        consumed, value = _value(data[offset:end])
        offset += consumed
        items.append(value)
    return end, items


def _value(data: bytes) -> tuple[int, Any]:
    tag = data[:1]
    value: Any
    if tag == b"F":
        consumed, value = _table(data[1:])
    elif tag == b"A":
        consumed, value = _array(data[1:])
    elif tag == b"T":
        consumed, value = _timestamp(data[1:])
    elif tag == b"S":
        (length,) = struct.unpack(">I", data[1:5])
        raw = data[5 : 5 + length]
        consumed, value = 4 + length, raw.decode("utf-8", "backslashreplace")
    else:
        return decode.embedded_value(data)
    return consumed + 1, value
