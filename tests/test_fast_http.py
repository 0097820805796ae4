"""The fast path's request shape and answers as pure functions (gateway.fast_http): what
``parse_head`` takes, what it hands to aiohttp, and that what it reads is what aiohttp's own
parsers read from the same bytes."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_parser import (
    SINGLETON_HEADERS,
    HttpRequestParserC,
    HttpRequestParserPy,
    HttpResponseParserPy,
    RawRequestMessage,
)
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDictProxy

from gateway import callback_protocol
from gateway.callback_protocol import CallbackProtocol
from gateway.callback_request import CallbackRequest
from gateway.connections import ConnectionGuard
from gateway.fast_http import (
    FAST_BODY_MAX,
    FAST_HEAD_MAX,
    FAST_HEADERS_MAX,
    HANDOFF,
    INCOMPLETE,
    FastHead,
    FastRequest,
    encode_response,
    parse_head,
)
from gateway.no_content import NoContent
from gateway.problem import problem_response
from tests.recording_transport import RecordingTransport


async def _handler(request: CallbackRequest) -> web.StreamResponse:
    return NoContent()  # never called: parse_head only names it


ROUTES = {b"/callbacks/camara": ("/callbacks/camara", _handler)}
BODY = b'{"id":"1"}'


def request(
    line: bytes = b"POST /callbacks/camara HTTP/1.1",
    headers: bytes = b"Host: gw\r\nContent-Type: application/json\r\n",
    body: bytes = BODY,
    length: bytes | None = None,
) -> bytes:
    length = b"Content-Length: %d\r\n" % len(body) if length is None else length
    return line + b"\r\n" + headers + length + b"\r\n" + body


def fast(buffer: bytes) -> FastHead:
    parsed = parse_head(buffer, ROUTES)
    assert isinstance(parsed, FastHead), parsed
    return parsed


def test_the_fast_shape_is_read_with_its_body_boundaries_and_headers() -> None:
    """A plain callback: body boundaries, headers in order, keep-alive, the route's handler."""
    data = request() + b"POST /next"
    head = fast(data)
    assert data[head.body_start : head.body_end] == BODY
    assert head.body_end == len(data) - len(b"POST /next")
    assert list(head.headers.items()) == [
        ("Host", "gw"),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(BODY))),
    ]
    assert head.keep_alive is True
    assert head.handler is _handler
    assert head.path == "/callbacks/camara"


def test_a_head_is_recognised_before_its_body_arrives() -> None:
    """The head alone is a FastHead whose body_end lies past the buffer."""
    data = request()
    head = fast(data[: -len(BODY)])
    assert head.body_end == len(data)


def test_every_prefix_of_a_head_is_incomplete() -> None:
    """Until the blank line arrives, nothing is decided."""
    data = request()
    head_end = data.index(b"\r\n\r\n") + 4
    for end in range(head_end):
        assert parse_head(data[:end], ROUTES) is INCOMPLETE, data[:end]


@pytest.mark.parametrize(
    ("connection", "keep_alive"),
    [
        (b"close", False),
        (b"Close", False),
        (b"keep-alive", True),
        (b"Keep-Alive, keep-alive", True),
        (b" close ", False),
    ],
)
def test_connection_keep_alive_or_close(connection: bytes, keep_alive: bool) -> None:
    """``Connection`` of keep-alive/close (any case, padded) sets keep_alive."""
    head = fast(request(headers=b"Host: gw\r\nConnection: %s\r\n" % connection))
    assert head.keep_alive is keep_alive


@pytest.mark.parametrize(
    "values",
    [
        (b"close", b"keep-alive"),
        (b"keep-alive", b"close"),
        (b"keep-alive", b"keep-alive"),
        (b"close", b"keep-alive", b"keep-alive"),
    ],
)
def test_several_connection_headers_close_if_any_says_close(values: tuple[bytes, ...]) -> None:
    """As aiohttp's parsers read them: one ``close`` among the Connection headers closes."""
    connection = b"".join(b"Connection: %s\r\n" % value for value in values)
    data = request(headers=b"Host: gw\r\n" + connection)
    read = _aiohttp_reads(HttpRequestParserC, data)
    assert not isinstance(read, Exception)
    assert fast(data).keep_alive is (not read[0].should_close)
    assert fast(data).keep_alive is (b"close" not in values)


def test_values_are_trimmed_and_may_be_empty_or_carry_utf8() -> None:
    """Optional whitespace around a value goes, as aiohttp drops it; UTF-8 is decoded."""
    head = fast(request(headers="Host:gw\r\nX-Empty:\r\nX-Name: \t é \t\r\n".encode()))
    assert head.headers["Host"] == "gw"
    assert head.headers["X-Empty"] == ""
    assert head.headers["X-Name"] == "é"


HANDOFFS: dict[str, bytes] = {
    "GET": request(line=b"GET /callbacks/camara HTTP/1.1"),
    "lowercase method": request(line=b"post /callbacks/camara HTTP/1.1"),
    "HTTP/1.0": request(line=b"POST /callbacks/camara HTTP/1.0"),
    "unknown source": request(line=b"POST /callbacks/other HTTP/1.1"),
    "query": request(line=b"POST /callbacks/camara?access_token=x HTTP/1.1"),
    "percent-encoded": request(line=b"POST /callbacks/%63amara HTTP/1.1"),
    "trailing slash": request(line=b"POST /callbacks/camara/ HTTP/1.1"),
    "absolute form": request(line=b"POST http://gw/callbacks/camara HTTP/1.1"),
    "two spaces": request(line=b"POST  /callbacks/camara HTTP/1.1"),
    "leading empty line": b"\r\n" + request(),
    "no content-length": request(length=b""),
    "two content-length": request(length=b"Content-Length: 10\r\nContent-Length: 10\r\n"),
    "content-length with a sign": request(length=b"Content-Length: +10\r\n"),
    "content-length list": request(length=b"Content-Length: 10, 10\r\n"),
    "content-length too long": request(length=b"Content-Length: 0000000010\r\n"),
    "body over FAST_BODY_MAX": request(body=b" " * (FAST_BODY_MAX + 1)),
    "transfer-encoding": request(headers=b"Transfer-Encoding: chunked\r\n"),
    "transfer-encoding identity": request(headers=b"transfer-encoding: identity\r\n"),
    "expect": request(headers=b"Expect: 100-continue\r\n"),
    "upgrade": request(headers=b"Upgrade: websocket\r\n"),
    "connection upgrade": request(headers=b"Connection: upgrade\r\n"),
    "connection empty": request(headers=b"Connection:\r\n"),
    "obs-fold": request(headers=b"X-A: 1\r\n 2\r\n"),
    "bare LF": request(headers=b"X-A: 1\nX-B: 2\r\n"),
    "bare CR": request(headers=b"X-A: 1\rX-B: 2\r\n"),
    "NUL": request(headers=b"X-A: \x00\r\n"),
    "DEL": request(headers=b"X-A: \x7f\r\n"),
    "space before colon": request(headers=b"X-A : 1\r\n"),
    "empty name": request(headers=b": 1\r\n"),
    "non-token name": request(headers=b"X@A: 1\r\n"),
    "no colon": request(headers=b"X-A\r\n"),
    "two hosts": request(headers=b"Host: a\r\nhost: b\r\n"),
    "two content-types": request(headers=b"Content-Type: a/b\r\nContent-Type: c/d\r\n"),
    "two user-agents": request(headers=b"User-Agent: a\r\nUser-Agent: b\r\n"),
}


@pytest.mark.parametrize("data", HANDOFFS.values(), ids=HANDOFFS.keys())
def test_any_other_shape_is_handed_to_aiohttp(data: bytes) -> None:
    """Every shape outside the strict one is HANDOFF, never a FastHead."""
    assert parse_head(data, ROUTES) is HANDOFF


def test_head_limit_is_fast_head_max_including_the_blank_line() -> None:
    """A head of exactly FAST_HEAD_MAX bytes is fast; one byte more, or no end by then, is not."""
    base = request(headers=b"Host: gw\r\nX-Pad: \r\n", body=b"")
    pad = FAST_HEAD_MAX - len(base)
    exact = request(headers=b"Host: gw\r\nX-Pad: %s\r\n" % (b"a" * pad), body=b"")
    assert len(exact) == FAST_HEAD_MAX
    assert isinstance(parse_head(exact, ROUTES), FastHead)
    over = request(headers=b"Host: gw\r\nX-Pad: %s\r\n" % (b"a" * (pad + 1)), body=b"")
    assert parse_head(over, ROUTES) is HANDOFF
    unfinished = over[: FAST_HEAD_MAX - 1]
    assert parse_head(unfinished, ROUTES) is INCOMPLETE
    assert parse_head(over[:FAST_HEAD_MAX], ROUTES) is HANDOFF


def test_header_count_limit_is_fast_headers_max() -> None:
    """FAST_HEADERS_MAX header lines are fast; one more is aiohttp's (it allows 128, then
    answers 400)."""
    filler = FAST_HEADERS_MAX - 2  # with Host and Content-Length
    assert isinstance(
        parse_head(request(headers=b"Host: gw\r\n" + b"a:1\r\n" * filler), ROUTES), FastHead
    )
    over = request(headers=b"Host: gw\r\n" + b"a:1\r\n" * (filler + 1))
    assert parse_head(over, ROUTES) is HANDOFF
    assert FAST_HEADERS_MAX < 126


def test_body_limit_is_fast_body_max() -> None:
    """A body of FAST_BODY_MAX bytes is fast."""
    head = fast(request(body=b" " * FAST_BODY_MAX))
    assert head.body_end - head.body_start == FAST_BODY_MAX


def test_fast_request_is_what_the_handlers_read() -> None:
    """Headers, path, remote, empty query, body and its length."""
    data = request()
    head = fast(data)
    fast_request = FastRequest(head, data[head.body_start : head.body_end], "10.0.0.1")
    assert fast_request.headers is head.headers
    assert fast_request.path == "/callbacks/camara"
    assert fast_request.remote == "10.0.0.1"
    assert len(fast_request.query) == 0
    assert fast_request.content_length == len(BODY)
    assert asyncio.run(fast_request.read()) == BODY


# Answers, read back with aiohttp's client-side parser.


def _read_response(data: bytes) -> tuple[int, str, dict[str, str], bytes, bool]:
    loop = asyncio.new_event_loop()
    try:
        parser = HttpResponseParserPy(BaseProtocol(loop), loop, 2**16)
        messages, _, tail = parser.feed_data(data)
        assert tail == b""
        [(message, payload)] = messages
        assert payload.is_eof()  # a complete answer, nothing after it
        body = payload.read_nowait(-1)
        headers = {name.lower(): value for name, value in message.headers.items()}
        assert len(headers) == len(message.headers)
        return message.code, message.reason, headers, body, message.should_close
    finally:
        loop.close()


@pytest.mark.parametrize("keep_alive", [True, False])
def test_no_content_is_a_bare_204(keep_alive: bool) -> None:
    """204: no Content-Length, no body; ``Connection: close`` only when closing."""
    data = encode_response(NoContent(), keep_alive)
    code, _, headers, body, should_close = _read_response(data)
    assert code == 204
    assert body == b""
    assert "content-length" not in headers
    assert headers["server"] == "event-gateway"
    assert headers["date"].endswith(" GMT")
    assert should_close is (not keep_alive)
    assert (headers.get("connection") == "close") is (not keep_alive)


@pytest.mark.parametrize("keep_alive", [True, False])
def test_a_problem_answer_keeps_its_headers_and_its_exact_body(keep_alive: bool) -> None:
    """401 problem+json: status, reason, WWW-Authenticate, Content-Type, Content-Length."""
    problem = problem_response(401, "no token", headers={"WWW-Authenticate": "Bearer"})
    problem.headers["Content-Length"] = "999"  # ignored: the real length is written
    problem.headers["Server"] = "leak/1.0"
    code, reason, headers, body, should_close = _read_response(encode_response(problem, keep_alive))
    assert (code, reason) == (401, "Unauthorized")
    assert headers["www-authenticate"] == "Bearer"
    assert headers["content-type"] == "application/problem+json"
    assert headers["server"] == "event-gateway"
    assert body == problem.body
    assert int(headers["content-length"]) == len(body)
    assert should_close is (not keep_alive)


def test_a_no_content_with_headers_takes_the_general_encoding() -> None:
    """A 204 that carries a header keeps it and still has no body or length."""
    response = NoContent()
    response.headers["Retry-After"] = "1"
    code, _, headers, body, _ = _read_response(encode_response(response, True))
    assert (code, headers["retry-after"], body) == (204, "1", b"")
    assert "content-length" not in headers


# Against aiohttp's parsers: generated requests near the fast shape.

_NAMES = st.sampled_from(
    [
        "Host",
        "host",
        "Content-Type",
        "content-type",
        "User-Agent",
        "Authorization",
        "Connection",
        "connection",
        "Transfer-Encoding",
        "Expect",
        "Upgrade",
        "Content-Length",
        "X-A",
        "X-B",
        "ce-id",
        "Server",
        "ETag",
    ]
) | st.text("!#$%&'*+-.^_`|~0123456789abcXYZ", min_size=1, max_size=6)
_VALUES = st.one_of(
    st.sampled_from(
        ["", "close", "keep-alive", "chunked", "100-continue", "1", " 5", "10", "-1", "a b"]
    ),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x17F), max_size=12),
    st.text(st.characters(min_codepoint=0, max_codepoint=0x17F), max_size=12),
)
_SEPARATORS = st.sampled_from([": "] * 8 + [":", ":\t", " :", "\t:"])


@st.composite
def _requests(draw: st.DrawFn) -> bytes:
    line = draw(
        st.sampled_from(
            [
                b"POST /callbacks/camara HTTP/1.1",
                b"POST /callbacks/camara HTTP/1.0",
                b"POST /callbacks/camara?a=1 HTTP/1.1",
                b"PUT /callbacks/camara HTTP/1.1",
            ]
        )
        if draw(st.integers(0, 9)) == 0
        else st.just(b"POST /callbacks/camara HTTP/1.1")
    )
    body = draw(st.binary(max_size=64))
    lines = [
        (draw(_NAMES) + draw(_SEPARATORS) + draw(_VALUES)).encode("utf-8", "surrogatepass")
        for _ in range(draw(st.integers(0, 6)))
    ]
    if draw(st.integers(0, 19)) == 0:  # around aiohttp's limit of 128 header lines
        lines += [b"a: 1"] * draw(st.integers(90, 130))
    if draw(st.integers(0, 9)) > 0:
        lines.insert(draw(st.integers(0, len(lines))), b"Host: gw")
    length_at = draw(st.integers(0, len(lines)))
    if draw(st.integers(0, 9)) > 0:
        declared = len(body) if draw(st.booleans()) else draw(st.integers(0, 80))
        lines.insert(length_at, b"Content-Length: %d" % declared)
    ending = b"\r\n" if draw(st.integers(0, 19)) > 0 else draw(st.sampled_from([b"\n", b"\r"]))
    return line + b"\r\n" + b"".join(item + ending for item in lines) + b"\r\n" + body


def _aiohttp_reads(
    parser_class: type[HttpRequestParserPy], data: bytes
) -> tuple[RawRequestMessage, bytes | None] | Exception:
    """(the first message, its body if complete) as aiohttp's parser reads ``data``, or the
    error it raises."""
    loop = asyncio.new_event_loop()
    try:
        parser = parser_class(
            BaseProtocol(loop), loop, 2**16, max_line_size=8190, max_field_size=8190
        )
        try:
            messages, _, _ = parser.feed_data(data)
        except Exception as exc:  # any parse error: the test says which
            return exc
        if not messages:
            return ValueError("no message")
        message, payload = messages[0]
        body = payload.read_nowait(-1) if payload.is_eof() else None
        return message, body
    finally:
        loop.close()


def _pairs(headers: CIMultiDictProxy[str]) -> list[tuple[str, str]]:
    """Names in lower case: aiohttp's C parser spells the ones it knows its own way."""
    return [(name.lower(), value) for name, value in headers.items()]


@pytest.mark.parametrize("parser_class", [HttpRequestParserPy, HttpRequestParserC])
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_requests())
def test_a_fast_head_reads_what_aiohttp_reads(
    parser_class: type[HttpRequestParserPy], data: bytes
) -> None:
    """Whenever parse_head takes a request, aiohttp parses the same bytes without error into
    the same method, path, headers, keep-alive and body."""
    parsed = parse_head(data, ROUTES)
    event(type(parsed).__name__)
    if parsed is INCOMPLETE:
        assert b"\r\n\r\n" not in data
        return
    if parsed is HANDOFF:
        return
    assert isinstance(parsed, FastHead)
    read = _aiohttp_reads(parser_class, data[: parsed.body_end])  # what follows is the next
    assert not isinstance(read, Exception), read
    message, body = read
    assert message.method == "POST"
    assert message.path == parsed.path
    assert message.version == (1, 1)
    assert not message.chunked
    assert not message.upgrade
    assert message.should_close is (not parsed.keep_alive)
    assert _pairs(message.headers) == _pairs(parsed.headers)
    if parsed.body_end <= len(data):
        assert body == data[parsed.body_start : parsed.body_end]
    else:
        assert body is None  # neither has the whole body yet


def test_the_singletons_are_aiohttps() -> None:
    """The headers a duplicate of which hands off are aiohttp's singleton headers."""
    for name in SINGLETON_HEADERS:
        twice = request(headers=b"%s: a\r\n%s: b\r\n" % (name.encode(), name.upper().encode()))
        assert parse_head(twice, ROUTES) is HANDOFF, name


# The protocol over a recording transport: any split of pipelined requests, same answers.


async def _feed(chunks: list[bytes]) -> tuple[bytes, list[bytes]]:
    """Feed ``chunks`` to a CallbackProtocol whose handler records bodies; what it wrote."""
    seen: list[bytes] = []

    async def handler(request: CallbackRequest) -> web.StreamResponse:
        seen.append(await request.read())
        await asyncio.sleep(0)  # answer on a later turn of the loop, as a publish does
        return NoContent()

    guard = ConnectionGuard(
        web.Server(_handler),
        cap=10,
        header_timeout_s=60,
        body_timeout_s=60,
        keepalive_timeout_s=60,
    )
    protocol = CallbackProtocol(guard, {b"/callbacks/camara": ("/callbacks/camara", handler)})
    transport = RecordingTransport()
    protocol.connection_made(transport)
    for chunk in chunks:
        protocol.data_received(chunk)
        for _ in range(3):  # a few turns of the loop between arrivals, as on a socket
            await asyncio.sleep(0)
    while protocol.task is not None:
        await protocol.task
    protocol.connection_lost(None)
    return bytes(transport.written), seen


@settings(max_examples=200, deadline=None)
@given(
    bodies=st.lists(st.binary(max_size=40), min_size=1, max_size=6),
    cuts=st.lists(st.integers(0, 2000), max_size=12),
)
def test_any_split_of_pipelined_requests_gets_one_answer_each_in_order(
    bodies: list[bytes], cuts: list[int]
) -> None:
    """The bytes of several requests cut anywhere: each body is handled once, in order, and
    the answers are one 204 per request."""
    data = b"".join(request(body=body) for body in bodies)
    points = sorted({0, len(data), *(cut for cut in cuts if cut < len(data))})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    written, seen = asyncio.run(_feed(chunks))
    assert seen == bodies
    assert written.count(b"HTTP/1.1 ") == len(bodies)
    assert written.count(b"HTTP/1.1 204 No Content\r\n") == len(bodies)


def test_a_head_dripping_in_byte_by_byte_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each byte of a slow head is searched once for the head's end, and ``parse_head`` runs
    once the end is there: a head sent a byte at a time costs a read per byte, not a scan of
    everything held per byte."""
    calls: list[int] = []
    real = callback_protocol.parse_head

    def counting(buffer: bytes | bytearray, routes: Any) -> Any:
        calls.append(len(buffer))
        return real(buffer, routes)

    monkeypatch.setattr(callback_protocol, "parse_head", counting)
    data = request(headers=b"Host: gw\r\nX-Pad: " + b"p" * 4000 + b"\r\n", body=b"x" * 300)
    written, seen = asyncio.run(_feed([data[i : i + 1] for i in range(len(data))]))
    assert seen == [b"x" * 300]
    assert written.count(b"HTTP/1.1 204 No Content\r\n") == 1
    assert len(calls) == 1  # once, when the blank line arrived; not once per byte
