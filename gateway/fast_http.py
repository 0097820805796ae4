"""The one HTTP/1.1 request shape the fast path takes, and its answers as bytes.

A callback is ``POST /callbacks/<configured name> HTTP/1.1`` with a ``Content-Length`` body
of a few hundred bytes. ``parse_head`` recognises exactly that shape and nothing looser:

* the request line is ``POST``, a target that is a configured callback path (no query,
  no percent-encoding, no absolute form), ``HTTP/1.1``;
* every header line is ``token ":" value`` with visible ASCII, space, tab or bytes >= 0x80 in
  the value (no bare CR or LF, no NUL, no obsolete line folding);
* exactly one ``Content-Length`` of at most ``FAST_BODY_MAX`` bytes; no
  ``Transfer-Encoding``, ``Content-Encoding``, ``Expect`` or ``Upgrade``; ``Connection`` at
  most ``keep-alive`` or ``close``;
* a ``Host``, and no second ``Host``, ``Content-Type`` or other header aiohttp allows once
  (its ``SINGLETON_HEADERS``: it answers 400 to either);
* the request line and headers fit in ``FAST_HEAD_MAX`` bytes, in at most
  ``FAST_HEADERS_MAX`` header lines.

Anything else is ``HANDOFF``: the connection goes to aiohttp, from the first byte of that
request, and aiohttp answers it exactly as it did before the fast path existed (its 400,
404, 405, 413, 431, ``100 Continue``, chunked bodies). Where the two parsers could disagree
about where a request ends, the fast path has already declined: that is what keeps request
smuggling out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

from aiohttp import web
from aiohttp.http_parser import SINGLETON_HEADERS
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy, MultiMapping

from gateway.callback_request import CallbackHandler
from gateway.connections import SERVER_NAME
from gateway.no_content import STATUS_LINE, NoContent, http_date

# Larger heads or bodies are aiohttp's: it streams them under the in-flight budget and its
# own limits (431, 413). A callback is ~1 KB; the fast path holds at most this per connection.
FAST_HEAD_MAX: Final = 8192
FAST_BODY_MAX: Final = 16384
# aiohttp answers 400 to more than 128 header lines (its C parser; its Python one to more
# than 126); a callback has about ten. More than this is aiohttp's to answer.
FAST_HEADERS_MAX: Final = 100
SERVER_HEADER: Final = f"Server: {SERVER_NAME}\r\n".encode()

# A header line: token name, colon, value of visible ASCII / SP / HTAB / obs-text. The whole
# header block must be a run of these (``fullmatch``), so a bare LF or CR, a NUL or a line
# starting with whitespace (obsolete folding) makes the request aiohttp's.
_HEADER_BLOCK = re.compile(rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\t\x20-\x7e\x80-\xff]*\r\n)*")
_CONNECTION_OPTIONS: Final = frozenset({b"keep-alive", b"close"})
_SINGLETONS: Final = frozenset(name.encode() for name in SINGLETON_HEADERS)
# Headers that change how aiohttp reads the body or answers (chunked framing, decompression,
# ``100 Continue``, protocol switch): such a request is aiohttp's.
_AIOHTTP_HEADERS: Final = frozenset(
    {b"transfer-encoding", b"content-encoding", b"expect", b"upgrade"}
)
_EMPTY_QUERY: Final[MultiDictProxy[str]] = MultiDictProxy(MultiDict())

# The raw request target of each configured callback path → (that path, its handler).
Routes = Mapping[bytes, tuple[str, CallbackHandler]]


class Incomplete:
    """More bytes are needed before the head (or the body) is whole."""


class Handoff:
    """Not the fast shape: aiohttp takes the connection from this request on."""


INCOMPLETE: Final = Incomplete()
HANDOFF: Final = Handoff()


@dataclass(slots=True)
class FastHead:
    """A recognised request: where its body lies in the buffer, and what to call."""

    handler: CallbackHandler
    path: str
    headers: CIMultiDictProxy[str]
    body_start: int
    body_end: int
    keep_alive: bool


def parse_head(buffer: bytes | bytearray, routes: Routes) -> FastHead | Incomplete | Handoff:
    """Recognise a fast-path request at the start of ``buffer`` (module docstring). A
    ``FastHead`` may be returned before its body is all in ``buffer`` (``body_end``)."""
    head_end = buffer.find(b"\r\n\r\n", 0, FAST_HEAD_MAX)
    if head_end < 0:
        return INCOMPLETE if len(buffer) < FAST_HEAD_MAX else HANDOFF
    line_end = buffer.find(b"\r\n", 0, head_end + 2)
    line = bytes(buffer[:line_end])
    if not line.startswith(b"POST ") or not line.endswith(b" HTTP/1.1"):
        return HANDOFF
    route = routes.get(line[5:-9])
    if route is None:
        return HANDOFF
    block_start = line_end + 2
    block_end = head_end + 2
    if buffer.count(b"\r\n", block_start, block_end) > FAST_HEADERS_MAX:
        return HANDOFF
    if _HEADER_BLOCK.fullmatch(buffer, block_start, block_end) is None:
        return HANDOFF
    pairs: list[tuple[str, str]] = []
    length = -1
    keep_alive = True
    singletons: set[bytes] = set()
    for raw in bytes(buffer[block_start:head_end]).split(b"\r\n") if head_end > line_end else ():
        name, _, value = raw.partition(b":")
        value = value.strip(b" \t")
        lowered = name.lower()
        if lowered == b"content-length":
            if length >= 0 or not value.isdigit() or len(value) > 9:
                return HANDOFF
            length = int(value)
        elif lowered == b"connection":
            options = {option.strip(b" \t").lower() for option in value.split(b",")}
            if not options <= _CONNECTION_OPTIONS:
                return HANDOFF
            keep_alive = keep_alive and b"close" not in options  # a close in any of them
        elif lowered in _AIOHTTP_HEADERS:
            return HANDOFF
        elif lowered in _SINGLETONS:
            if lowered in singletons:
                return HANDOFF
            singletons.add(lowered)
        pairs.append((name.decode("ascii"), value.decode("utf-8", "surrogateescape")))
    if length < 0 or length > FAST_BODY_MAX or b"host" not in singletons:
        return HANDOFF
    body_start = head_end + 4
    path, handler = route
    return FastHead(
        handler,
        path,
        CIMultiDictProxy(CIMultiDict(pairs)),
        body_start,
        body_start + length,
        keep_alive,
    )


class FastRequest:
    """A callback the fast path read whole: what ``gateway.callbacks`` reads of a request."""

    __slots__ = ("_body", "headers", "path", "remote")

    def __init__(self, head: FastHead, body: bytes, remote: str | None) -> None:
        self.headers = head.headers
        self.path = head.path
        self.remote = remote
        self._body = body

    @property
    def query(self) -> MultiMapping[str]:
        return _EMPTY_QUERY  # a target with a query string is aiohttp's

    @property
    def content_length(self) -> int:
        return len(self._body)

    async def read(self) -> bytes:
        return self._body


def encode_response(response: web.StreamResponse, keep_alive: bool) -> bytes:
    """The bytes of a handler's answer: the prebuilt 204, or status line, headers and body of
    a ``web.Response`` (problem+json), with ``Server``, ``Date`` and ``Content-Length``."""
    date = http_date()
    if type(response) is NoContent and keep_alive and not response.headers:
        return STATUS_LINE + SERVER_HEADER + b"Date: " + date + b"\r\n\r\n"
    status = response.status
    reason = response.reason or HTTPStatus(status).phrase
    lines = [f"HTTP/1.1 {status} {reason}\r\n".encode("latin-1")]
    for name, value in response.headers.items():
        if name.lower() not in ("content-length", "connection", "server", "date"):
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
    lines.append(SERVER_HEADER + b"Date: " + date + b"\r\n")
    body = b""
    if isinstance(response, web.Response) and response.body is not None:
        body = bytes(response.body)  # type: ignore[arg-type]  # always bytes here: orjson
    if status != 204 and status != 304 and status >= 200:
        lines.append(b"Content-Length: %d\r\n" % len(body))
    else:
        body = b""
    if not keep_alive:
        lines.append(b"Connection: close\r\n")
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)
