"""The 204 of an accepted callback, written as one prebuilt buffer.

aiohttp's ``Response`` builds a header multidict, works out length, chunking and the
``Connection`` header, serialises the headers and writes them: several microseconds for an
answer whose bytes never change but for the ``Date``. ``NoContent`` writes
``HTTP/1.1 204 No Content``, ``Server`` and ``Date`` through the request's own stream writer
(so aiohttp's byte count and keep-alive handling stay right) when the request is HTTP/1.1
and keep-alive and nothing else was set on the response; any other case (HTTP/1.0, a client
asking to close, extra headers) takes aiohttp's ordinary path.
"""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpVersion11
from aiohttp.web_request import BaseRequest

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
NO_CONTENT = 204
STATUS_LINE = b"HTTP/1.1 204 No Content\r\n"


class _HttpDate:
    """The IMF-fixdate of now (RFC 9110 ``Date``), formatted once per second."""

    __slots__ = ("second", "text")

    def __init__(self) -> None:
        self.second = -1
        self.text = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self.second:
            t = time.gmtime(second)
            self.text = (
                f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
                f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
            ).encode()
            self.second = second
        return self.text


_date = _HttpDate()


def http_date() -> bytes:
    """The ``Date`` header's value now (cached for the second)."""
    return _date.now()


class NoContent(web.StreamResponse):
    """``204 No Content`` (module docstring)."""

    def __init__(self) -> None:
        super().__init__(status=NO_CONTENT)
        self._written = False

    @property
    def prepared(self) -> bool:
        return self._written or super().prepared

    @property
    def keep_alive(self) -> bool | None:
        return True if self._written else super().keep_alive

    async def prepare(self, request: BaseRequest) -> AbstractStreamWriter | None:
        if self._written:
            return None
        headers = self.headers
        if (
            super().prepared
            or request.version != HttpVersion11
            or not request.keep_alive
            or len(headers) > 1
            or (headers and "Server" not in headers)
        ):
            return await super().prepare(request)
        server = headers.get("Server")
        head = STATUS_LINE
        if server is not None:
            if not server.isprintable() or not server.isascii():
                return await super().prepare(request)  # aiohttp's checks and encoding
            head += b"Server: " + server.encode() + b"\r\n"
        self._written = True
        await request.writer.write_eof(head + b"Date: " + _date.now() + b"\r\n\r\n")
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        if not self._written:
            await super().write_eof(data)
