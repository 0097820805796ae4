"""The fast callback path over real sockets: pipelining, hand-over to aiohttp, smuggling
shapes answered as aiohttp alone answers them, timeouts, the connection cap, back-pressure
and shutdown (gateway.callback_protocol, gateway.fast_http)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import orjson
import pytest
import uvloop
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from aiohttp import web

from gateway.app import PUBLISHER, create_app
from gateway.callback_protocol import PAUSE_READING_AT, CallbackProtocol
from gateway.connections import ConnectionGuard
from gateway.runner import GatewayServer
from tests.broker import AMQP_URL, drain
from tests.conftest import TOKENS, GatewayTestServer, make_settings
from tests.hostile import LEGIT_TOKEN, Serve, write_config
from tests.recording_transport import RecordingTransport
from tests.tcp_proxy import TcpProxy, free_port

TOKEN = TOKENS["camara"].encode()
READ_MAX = 2**18  # the most an asyncio (or uvloop) transport reads at once


@dataclass
class Gateway:
    """A running ingress (fast path on or off) publishing into the test's capture queue."""

    server: GatewayTestServer
    fast_path: bool
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    @property
    def port(self) -> int:
        port = self.server.port
        assert port is not None
        return port

    @property
    def guard(self) -> ConnectionGuard:
        runner = self.server.runner
        assert runner is not None
        server = runner.server
        assert isinstance(server, GatewayServer)
        return server.guard

    def kinds(self) -> list[str]:
        """The kind of each open connection: the fast path's or aiohttp's."""
        return sorted(type(connection).__name__ for connection in self.guard.open)

    def fast_connections(self) -> list[CallbackProtocol]:
        return [c for c in self.guard.open if isinstance(c, CallbackProtocol)]


Start = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def capture(prefix: str, amqp: AbstractRobustConnection) -> AsyncIterator[Capture]:
    """A queue bound to everything the test's exchange receives."""
    channel = await amqp.channel()
    yield Capture(channel, f"{prefix}.capture")
    await channel.close()


@dataclass
class Capture:
    channel: AbstractChannel
    queue: str

    async def ids(self, expected: int, timeout: float = 10.0) -> list[str]:
        """The CloudEvent ids of ``expected`` published messages (fewer at the deadline)."""
        messages = await drain(self.channel, self.queue, expected, timeout)
        return [str(message.message_id) for message in messages]


@pytest.fixture
async def start(prefix: str, capture: Capture) -> AsyncIterator[Start]:
    """Start ingresses on the test's prefix (``fast_path`` and ``[http]`` overrides)."""
    started: list[Gateway] = []

    async def factory(
        fast_path: bool = True, amqp: dict[str, object] | None = None, **http: object
    ) -> Gateway:
        settings = make_settings(prefix, **(amqp or {}))
        settings = replace(settings, http=replace(settings.http, fast_path=fast_path, **http))  # type: ignore[arg-type]
        app = create_app(settings)
        server = GatewayTestServer(app)
        await server.start_server()
        gateway = Gateway(server, fast_path)
        started.append(gateway)
        await asyncio.wait_for(app[PUBLISHER].wait_ready(), 15)  # type: ignore[attr-defined]
        queue = await capture.channel.declare_queue(capture.queue, durable=False)
        await queue.bind(prefix, routing_key="#")
        return gateway

    yield factory
    for gateway in started:
        for writer in gateway.writers:
            writer.close()
        await gateway.server.close()


def event(event_id: str | None = None) -> bytes:
    """A small structured CAMARA CloudEvent with a unique (or given) id."""
    return (
        b'{"specversion":"1.0","id":"%s","source":"https://telco.example","type":'
        b'"org.camaraproject.device-roaming-status.v0.roaming-on","time":"2026-03-01T10:00:00Z",'
        b'"data":{"device":{"phoneNumber":"+123456789"},"roaming":true,"countryCode":208}}'
    ) % (event_id or uuid.uuid4().hex).encode()


def callback(
    body: bytes | None = None,
    *,
    source: bytes = b"camara",
    token: bytes = TOKEN,
    extra: bytes = b"",
) -> bytes:
    """The bytes of one fast-shape ``POST /callbacks/<source>``."""
    body = event() if body is None else body
    return (
        b"POST /callbacks/%s HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/cloudevents+json\r\n%sContent-Length: %d\r\n\r\n%s"
        % (source, token, extra, len(body), body)
    )


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


async def read_answer(reader: asyncio.StreamReader, timeout: float = 10.0) -> Answer:
    """One HTTP/1.1 response (status line, headers, Content-Length body)."""
    async with asyncio.timeout(timeout):
        head = await reader.readuntil(b"\r\n\r\n")
        line, *lines = head[:-4].decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for raw in lines:
            name, _, value = raw.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await reader.readexactly(length) if length else b""
    return Answer(int(line.split()[1]), headers, body)


async def read_all(reader: asyncio.StreamReader, timeout: float = 10.0) -> list[Answer]:
    """Every answer until the server closes the connection (or the deadline)."""
    answers: list[Answer] = []
    try:
        while True:
            answers.append(await read_answer(reader, timeout))
    except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
        pass
    return answers


async def connect(gateway: Gateway) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw client connection, closed at the end of the test."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    gateway.writers.append(writer)
    return reader, writer


async def test_a_request_written_byte_by_byte_is_answered_once_and_published_once(
    start: Start, capture: Capture
) -> None:
    """Every byte its own write (and its own segment): one 204, one message."""
    gateway = await start()
    reader, writer = await connect(gateway)
    event_id = uuid.uuid4().hex
    for byte in callback(event(event_id)):
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0)  # let the loop send it before the next byte is queued
    answer = await read_answer(reader)
    assert answer.status == 204
    writer.close()
    assert await capture.ids(2, timeout=1.0) == [event_id]


@pytest.mark.parametrize("count", [2, 10])
async def test_pipelined_requests_in_one_write_are_answered_in_order(
    start: Start, capture: Capture, count: int
) -> None:
    """``count`` requests in one write: ``count`` answers, in order, each event published."""
    gateway = await start()
    reader, writer = await connect(gateway)
    ids = [uuid.uuid4().hex for _ in range(count)]
    # Every other one is unauthenticated, so the order of the answers shows.
    writer.write(
        b"".join(
            callback(event(event_id), token=TOKEN if index % 2 == 0 else b"wrong")
            for index, event_id in enumerate(ids)
        )
    )
    answers = [await read_answer(reader) for _ in ids]
    assert [answer.status for answer in answers] == [204, 401] * (count // 2)
    writer.close()
    assert sorted(await capture.ids(count, timeout=2.0)) == sorted(ids[::2])


TAG = b"@@@@@@@@"  # in the event ids of a shape: replaced by the run's tag (same length)


def _labelled(label: str, body_pad: int = 0) -> bytes:
    return event(f"{label}-{TAG.decode()}") + b" " * body_pad


def _shape(
    line: bytes = b"POST /callbacks/camara HTTP/1.1",
    headers: bytes = b"",
    body: bytes | None = None,
    length: bytes | None = None,
) -> bytes:
    """A request with a valid token and CloudEvent, its line or headers bent."""
    body = _labelled("hostile") if body is None else body
    length = b"Content-Length: %d\r\n" % len(body) if length is None else length
    return (
        line + b"\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/cloudevents+json\r\n%s%s\r\n%s" % (TOKEN, headers, length, body)
    )


def _chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


HOSTILE_BODY = _labelled("hostile")
SMUGGLED = callback(_labelled("smuggled"))
SMUGGLING_SHAPES: dict[str, bytes] = {
    "two content-length, equal": _shape(
        length=b"Content-Length: %d\r\nContent-Length: %d\r\n" % ((len(HOSTILE_BODY),) * 2),
        body=HOSTILE_BODY,
    ),
    "two content-length, differing": _shape(
        length=b"Content-Length: %d\r\nContent-Length: 0\r\n" % len(HOSTILE_BODY),
        body=HOSTILE_BODY + SMUGGLED,
    ),
    "content-length and transfer-encoding": _shape(
        headers=b"Transfer-Encoding: chunked\r\n",
        length=b"Content-Length: %d\r\n" % len(_chunked(HOSTILE_BODY)),
        body=_chunked(HOSTILE_BODY) + SMUGGLED,
    ),
    "transfer-encoding then content-length 0": _shape(
        headers=b"Transfer-Encoding: chunked\r\n",
        length=b"Content-Length: 0\r\n",
        body=_chunked(HOSTILE_BODY),
    ),
    "obs-fold header line": _shape(headers=b"X-Folded: a\r\n  b\r\n"),
    "obs-fold content-length": _shape(
        length=b"Content-Length: \r\n %d\r\n" % len(HOSTILE_BODY), body=HOSTILE_BODY
    ),
    "bare LF in the headers": _shape(headers=b"X-A: 1\nX-B: 2\r\n"),
    "bare LF line endings": _shape().replace(b"\r\n", b"\n"),
    "bare CR in a value": _shape(headers=b"X-A: 1\rX-B: 2\r\n"),
    "NUL in a header value": _shape(headers=b"X-A: a\x00b\r\n"),
    "DEL in a header value": _shape(headers=b"X-A: a\x7fb\r\n"),
    "space before the colon": _shape(
        length=b"Content-Length : %d\r\n" % len(HOSTILE_BODY), body=HOSTILE_BODY
    ),
    "tab before the colon": _shape(headers=b"X-A\t: 1\r\n"),
    "empty header name": _shape(headers=b": 1\r\n"),
    "non-token header name": _shape(headers=b"X(A): 1\r\n"),
    "content-length with a plus": _shape(
        length=b"Content-Length: +%d\r\n" % len(HOSTILE_BODY), body=HOSTILE_BODY
    ),
    "content-length with leading zeros": _shape(
        length=b"Content-Length: 000%d\r\n" % len(HOSTILE_BODY), body=HOSTILE_BODY
    ),
    "content-length in hex": _shape(length=b"Content-Length: 0x10\r\n"),
    "content-length, comma list": _shape(
        length=b"Content-Length: %d, %d\r\n" % ((len(HOSTILE_BODY),) * 2), body=HOSTILE_BODY
    ),
    "negative content-length": _shape(length=b"Content-Length: -1\r\n"),
    "huge content-length": _shape(length=b"Content-Length: 99999999999999999999\r\n"),
    "no content-length": _shape(length=b"", body=b""),
    "two hosts": _shape(headers=b"Host: other\r\n"),
    "two content-types": _shape(headers=b"content-type: text/plain\r\n"),
    "two user-agents": _shape(headers=b"User-Agent: a\r\nUser-Agent: b\r\n"),
    "transfer-encoding identity": _shape(headers=b"Transfer-Encoding: identity\r\n"),
    "connection upgrade": _shape(headers=b"Connection: Upgrade\r\nUpgrade: websocket\r\n"),
    "upgrade h2c": _shape(headers=b"Connection: keep-alive, Upgrade\r\nUpgrade: h2c\r\n"),
    "lowercase method": _shape(line=b"post /callbacks/camara HTTP/1.1"),
    "HTTP/1.0": _shape(line=b"POST /callbacks/camara HTTP/1.0"),
    "HTTP/1.0 keep-alive": _shape(
        line=b"POST /callbacks/camara HTTP/1.0", headers=b"Connection: keep-alive\r\n"
    ),
    "HTTP/2.0 in the line": _shape(line=b"POST /callbacks/camara HTTP/2.0"),
    "lowercase version": _shape(line=b"POST /callbacks/camara http/1.1"),
    "absolute-form target": _shape(line=b"POST http://gw/callbacks/camara HTTP/1.1"),
    "percent-encoded source": _shape(line=b"POST /callbacks/%63amara HTTP/1.1"),
    "trailing slash": _shape(line=b"POST /callbacks/camara/ HTTP/1.1"),
    "dot segment": _shape(line=b"POST /callbacks/../callbacks/camara HTTP/1.1"),
    "double slash": _shape(line=b"POST //callbacks/camara HTTP/1.1"),
    "query string": _shape(line=b"POST /callbacks/camara?x=1 HTTP/1.1"),
    "fragment": _shape(line=b"POST /callbacks/camara#x HTTP/1.1"),
    "two spaces in the line": _shape(line=b"POST  /callbacks/camara HTTP/1.1"),
    "tab in the line": _shape(line=b"POST\t/callbacks/camara HTTP/1.1"),
    "leading empty line": b"\r\n" + _shape(),
    "20 KiB body": _shape(body=_labelled("hostile", 20 * 1024)),
    "10 KiB head": _shape(headers=b"X-Pad-A: %s\r\nX-Pad-B: %s\r\n" % (b"a" * 5120, b"b" * 5120)),
    "8 KiB head exactly": _shape(headers=b"X-Pad: %s\r\n" % (b"a" * 7900)),
    "expect 100-continue": _shape(headers=b"Expect: 100-continue\r\n"),
    "unknown source": _shape(line=b"POST /callbacks/nobody HTTP/1.1"),
    "utf-8 in a value": _shape(headers="X-Name: é\r\n".encode()),
    "latin-1 byte in a value": _shape(headers=b"X-Name: \xe9\r\n"),
    "1,500 headers": _shape(headers=b"a:1\r\n" * 1500),
    "128 headers": _shape(headers=b"a:1\r\n" * (128 - 4)),  # with Host, Authorization,
    "129 headers": _shape(headers=b"a:1\r\n" * (129 - 4)),  # Content-Type, -Length
    "two authorizations": _shape(headers=b"Authorization: Bearer wrong\r\n"),
    "content-length with a tab after": _shape(
        length=b"Content-Length: %d\t\r\n" % len(HOSTILE_BODY), body=HOSTILE_BODY
    ),
    "connection keep-alive, twice": _shape(
        headers=b"Connection: keep-alive\r\nConnection: keep-alive\r\n"
    ),
    "content-encoding gzip": _shape(headers=b"Content-Encoding: gzip\r\n"),
    "content-encoding identity": _shape(headers=b"Content-Encoding: identity\r\n"),
    "no host": _shape().replace(b"Host: gw\r\n", b""),
    "empty host": _shape().replace(b"Host: gw\r\n", b"Host:\r\n"),
}
FOLLOW_UP = b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"


async def _exchange(gateway: Gateway, data: bytes, tag: bytes) -> list[int]:
    """The statuses answered to ``data`` then a fast request and a ``Connection: close``
    request, until the server closes the connection; ``tag`` marks their event ids."""
    reader, writer = await connect(gateway)
    try:
        writer.write((data + SMUGGLED).replace(TAG, tag) + FOLLOW_UP)
        return [answer.status for answer in await read_all(reader)]
    finally:
        writer.transport.abort()


async def _compare(
    start: Start, capture: Capture, shapes: dict[str, bytes], **http: object
) -> dict[tuple[int, str], list[str]]:
    """Send each shape (then a fast request and a closing GET) to an ingress with the fast
    path and one without: the statuses and the published events (by the label in their
    event ids) must be the same. Returns what each published, by (shape index, f/s)."""
    fast = await start(fast_path=True, header_timeout_s=1.0, body_timeout_s=1.0, **http)
    slow = await start(fast_path=False, header_timeout_s=1.0, body_timeout_s=1.0, **http)
    differences: dict[str, object] = {}
    for index, (name, data) in enumerate(shapes.items()):
        statuses = await asyncio.gather(
            _exchange(fast, data, b"%07df" % index), _exchange(slow, data, b"%07ds" % index)
        )
        if statuses[0] != statuses[1]:
            differences[name] = statuses
    assert differences == {}, "statuses differ"
    # Every connection is closed; anything published without an answer is in by now.
    ids = await capture.ids(10000, timeout=2.0)
    published: dict[tuple[int, str], list[str]] = {}
    for event_id in ids:
        label, tag = event_id.rsplit("-", 1)
        published.setdefault((int(tag[:7]), tag[7]), []).append(label)
    for index, name in enumerate(shapes):
        fast_labels = sorted(published.get((index, "f"), []))
        slow_labels = sorted(published.get((index, "s"), []))
        if fast_labels != slow_labels:
            differences[name] = (fast_labels, slow_labels)
    assert differences == {}, "published events differ"
    return published


async def test_smuggling_shapes_are_answered_as_aiohttp_alone_answers_them(
    start: Start, capture: Capture
) -> None:
    """Each odd request, then a fast one and a closing GET: the same statuses with the fast
    path as without it, and the same requests published."""
    published = await _compare(start, capture, SMUGGLING_SHAPES)
    big = list(SMUGGLING_SHAPES).index("20 KiB body")  # the tags do name what was published
    assert sorted(published[big, "f"]) == sorted(published[big, "s"]) == ["hostile", "smuggled"]


BODY_LIMIT_SHAPES = {
    "body at max_body_bytes": _shape(body=_labelled("hostile", 1024 - len(_labelled("x")) + 1)),
    "body one over max_body_bytes": _shape(
        body=_labelled("hostile", 1025 - len(_labelled("x")) + 1)
    ),
    "4 KiB body": _shape(body=_labelled("hostile", 4096)),
    "20 KiB body": _shape(body=_labelled("hostile", 20 * 1024)),
    "content-length 0": _shape(body=b""),
}


async def test_bodies_over_max_body_bytes_are_answered_as_aiohttp_alone_answers_them(
    start: Start, capture: Capture
) -> None:
    """max_body_bytes = 1 KiB, below the fast path's 16 KiB: the same 413s (and the same
    follow-up answers) with the fast path as without it."""
    await _compare(start, capture, BODY_LIMIT_SHAPES, max_body_bytes=1024)


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it holds (a deadline, not a sleep for synchronisation)."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 (server state no event reports)
            await asyncio.sleep(0.01)


async def _closed_after(reader: asyncio.StreamReader, timeout: float = 10.0) -> float:
    """Seconds until the server closed the connection (reading whatever it sends)."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    async with asyncio.timeout(timeout):
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
    return loop.time() - began


HANDOVERS: dict[str, tuple[bytes, list[int]]] = {
    "GET /healthz": (b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n", [200]),
    "query string": (
        _shape(line=b"POST /callbacks/camara?x=1 HTTP/1.1", body=event()),
        [204],
    ),
    "access_token in the query": (
        b"POST /callbacks/camara?access_token=%s HTTP/1.1\r\nHost: gw\r\n"
        b"Content-Type: application/cloudevents+json\r\nContent-Length: %d\r\n\r\n%s"
        % (TOKEN, len(event()), event()),
        [204],
    ),
    "chunked body": (
        _shape(headers=b"Transfer-Encoding: chunked\r\n", length=b"", body=_chunked(event())),
        [204],
    ),
    "unknown source": (_shape(line=b"POST /callbacks/nobody HTTP/1.1", body=event()), [404]),
}


@pytest.mark.parametrize(("second", "statuses"), HANDOVERS.values(), ids=HANDOVERS.keys())
async def test_a_fast_request_then_another_shape_in_one_write_hands_over_in_order(
    start: Start, capture: Capture, second: bytes, statuses: list[int]
) -> None:
    """Fast request, then one aiohttp must read, then a fast one, in one write: answered in
    order; the connection is aiohttp's from the second request on."""
    gateway = await start()
    reader, writer = await connect(gateway)
    first, third = uuid.uuid4().hex, uuid.uuid4().hex
    writer.write(callback(event(first)) + second + callback(event(third)))
    answers = [await read_answer(reader) for _ in range(3)]
    assert [answer.status for answer in answers] == [204, *statuses, 204]
    assert gateway.kinds() == ["GuardedRequestHandler"]
    writer.close()
    published = await capture.ids(3 if statuses == [204] else 2)
    assert first in published
    assert third in published


async def test_expect_100_continue_after_a_fast_request_is_aiohttps(
    start: Start, capture: Capture
) -> None:
    """A pipelined ``Expect: 100-continue`` head gets its 100, then its body its 204."""
    gateway = await start()
    reader, writer = await connect(gateway)
    second = event()
    writer.write(
        callback()
        + _shape(
            headers=b"Expect: 100-continue\r\n",
            body=b"",
            length=b"Content-Length: %d\r\n" % len(second),
        )
    )
    assert (await read_answer(reader)).status == 204
    assert (await read_answer(reader)).status == 100
    writer.write(second)
    assert (await read_answer(reader)).status == 204
    writer.close()
    assert len(await capture.ids(2)) == 2


async def test_connection_close_closes_after_the_answer(start: Start, capture: Capture) -> None:
    """``Connection: close``: the 204 says close, the socket closes, bytes after it are not
    read as a request."""
    gateway = await start()
    reader, writer = await connect(gateway)
    event_id = uuid.uuid4().hex
    writer.write(callback(event(event_id), extra=b"Connection: close\r\n") + callback())
    answer = await read_answer(reader)
    assert answer.status == 204
    assert answer.headers["connection"] == "close"
    assert await _closed_after(reader) < 5
    assert await capture.ids(2, timeout=1.0) == [event_id]


async def test_wrong_token_is_a_401_problem_with_www_authenticate(start: Start) -> None:
    """Over the fast path (the connection stays the fast path's): 401, problem+json,
    ``WWW-Authenticate: Bearer``, keep-alive."""
    gateway = await start()
    reader, writer = await connect(gateway)
    writer.write(callback(token=b"not-the-token"))
    answer = await read_answer(reader)
    assert answer.status == 401
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["www-authenticate"].startswith("Bearer")
    problem = orjson.loads(answer.body)
    assert problem["status"] == 401
    assert gateway.kinds() == ["CallbackProtocol"]
    writer.write(callback())
    assert (await read_answer(reader)).status == 204  # still open, still fast
    assert gateway.kinds() == ["CallbackProtocol"]
    writer.close()


async def test_broker_gone_is_a_503_with_retry_after(
    start: Start, capture: Capture, proxy: TcpProxy
) -> None:
    """The broker connection cut: the fast path answers 503 problem+json with Retry-After."""
    gateway = await start(amqp={"url": proxy.url_for(AMQP_URL)})
    reader, writer = await connect(gateway)
    writer.write(callback())
    assert (await read_answer(reader)).status == 204
    await proxy.cut()
    writer.write(callback())
    answer = await read_answer(reader)
    assert answer.status == 503
    assert int(answer.headers["retry-after"]) > 0
    assert answer.headers["content-type"] == "application/problem+json"
    assert gateway.kinds() == ["CallbackProtocol"]
    writer.close()


async def test_half_a_head_is_closed_after_header_timeout(start: Start) -> None:
    """Half a head (first on the connection, or after a keep-alive answer): closed after
    header_timeout_s, well before the body or keep-alive timeouts."""
    gateway = await start(header_timeout_s=0.5, body_timeout_s=5.0, keepalive_timeout_s=5.0)
    half = callback()[:40]
    reader, writer = await connect(gateway)
    writer.write(half)
    assert 0.3 < await _closed_after(reader) < 3.0
    assert gateway.guard.header_timeouts == 1

    reader, writer = await connect(gateway)
    writer.write(callback())
    assert (await read_answer(reader)).status == 204
    writer.write(half)
    assert 0.3 < await _closed_after(reader) < 3.0
    assert gateway.guard.header_timeouts == 2


async def test_a_slow_head_handed_to_aiohttp_keeps_what_is_left_of_its_timeout(
    start: Start,
) -> None:
    """A head that grows past the fast path's 8 KiB after most of header_timeout_s is handed
    to aiohttp with the rest of that timeout, not a fresh one (which would give a slow client
    twice the time)."""
    gateway = await start(header_timeout_s=1.0, body_timeout_s=5.0, keepalive_timeout_s=5.0)
    loop = asyncio.get_running_loop()
    reader, writer = await connect(gateway)
    began = loop.time()
    writer.write(b"POST /callbacks/camara HTTP/1.1\r\nHost: gw\r\n")
    await asyncio.sleep(0.6)  # the slow client itself, not a synchronisation
    writer.write(b"X-Pad: %s\r\n" % (b"p" * 1000) * 9)  # past 8 KiB: aiohttp's from here
    await _until(lambda: gateway.kinds() != ["CallbackProtocol"])  # handed over (or closed)
    await _closed_after(reader)
    assert loop.time() - began < 1.45  # 1.0 s in all (a fresh timeout: 1.6 s)
    assert gateway.guard.header_timeouts == 1


async def test_a_head_without_its_body_is_closed_after_body_timeout(start: Start) -> None:
    """The head, then silence: closed after body_timeout_s, not header_timeout_s."""
    gateway = await start(header_timeout_s=0.3, body_timeout_s=1.5, keepalive_timeout_s=10.0)
    reader, writer = await connect(gateway)
    writer.write(callback()[:-5])
    assert 1.2 < await _closed_after(reader) < 5.0
    assert gateway.guard.body_timeouts == 1
    assert gateway.guard.header_timeouts == 0


async def test_an_idle_keep_alive_connection_is_closed_after_keepalive_timeout(
    start: Start,
) -> None:
    """After an answer, silence: closed after keepalive_timeout_s (not the shorter header
    timeout), and not counted as a slow client."""
    gateway = await start(header_timeout_s=0.3, body_timeout_s=0.3, keepalive_timeout_s=1.5)
    reader, writer = await connect(gateway)
    writer.write(callback())
    assert (await read_answer(reader)).status == 204
    assert 1.2 < await _closed_after(reader) < 5.0
    assert gateway.guard.header_timeouts == gateway.guard.body_timeouts == 0


async def test_the_connection_cap_counts_fast_connections(start: Start) -> None:
    """max_connections=3, three idle fast clients: a fourth is served and the longest-idle
    one is closed."""
    gateway = await start(max_connections=3)
    idle = [await connect(gateway) for _ in range(3)]
    await _until(lambda: len(gateway.guard.open) == 3)
    assert gateway.kinds() == ["CallbackProtocol"] * 3
    reader, writer = await connect(gateway)
    writer.write(callback())
    assert (await read_answer(reader)).status == 204
    assert await _closed_after(idle[0][0], 5.0) < 5.0
    assert gateway.guard.evicted == 1
    assert len(gateway.guard.open) == 3
    for _, idle_writer in idle:
        idle_writer.close()
    writer.close()


async def test_a_connection_receiving_a_body_is_not_evicted_as_idle(start: Start) -> None:
    """The cap closes the longest-idle connection, not one whose request body is arriving:
    as aiohttp's handler does (a request is in progress once its head is whole)."""
    for fast_path in (False, True):
        gateway = await start(fast_path=fast_path, max_connections=2)
        guard = gateway.guard
        uploading_reader, uploading = await connect(gateway)
        data = callback()
        uploading.write(data[:-10])
        with contextlib.suppress(TimeoutError):  # its head whole: no longer idle
            await _until(lambda: len(guard.open) == 1 and not guard.idle, 3.0)  # noqa: B023
        assert len(guard.idle) == 0, f"fast_path={fast_path}: a request in progress is idle"
        idle_reader, _ = await connect(gateway)
        await _until(lambda: len(guard.open) == 2)  # noqa: B023
        await connect(gateway)  # over the cap: one of the two goes
        assert await _closed_after(idle_reader, 5.0) < 5.0, fast_path
        uploading.write(data[-10:])
        assert (await read_answer(uploading_reader)).status == 204, fast_path


async def test_a_client_that_never_reads_its_answers_stops_being_read(
    start: Start, capture: Capture
) -> None:
    """Pipelined requests with no answer read: the ingress stops reading (what it holds of
    them stays under PAUSE_READING_AT plus one read), the client's writes back up, and once
    it reads, every request is answered 204 and published."""
    gateway = await start()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sock.connect(("127.0.0.1", gateway.port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    gateway.writers.append(writer)
    request = callback()
    total = 5000
    sent = 0

    async def send() -> None:
        nonlocal sent
        for _ in range(total // 100):
            writer.write(request * 100)
            await writer.drain()
            sent += 100

    sending = asyncio.create_task(send())
    await _until(lambda: len(gateway.fast_connections()) == 1)
    [protocol] = gateway.fast_connections()
    transport = writer.transport
    # Backed up: the ingress has stopped reading and the client's writes wait.
    await _until(lambda: protocol._reading_paused and transport.get_write_buffer_size() > 0, 60.0)
    assert len(protocol._pending) <= PAUSE_READING_AT + READ_MAX, sent
    assert not sending.done()
    statuses = [(await read_answer(reader)).status for _ in range(total)]
    await sending
    assert set(statuses) == {204}
    assert len(await capture.ids(total, timeout=30.0)) == total


def _unread_server_sockets(port: int) -> tuple[int, int]:
    """(established connections to ``port``, bytes they hold that the server has not read),
    from /proc/net/tcp."""
    connections = unread = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if int(local.split(":")[1], 16) == port and state == "01":
            connections += 1
            unread += int(queues.split(":")[1], 16)
    return connections, unread


@pytest.mark.slow
async def test_sigterm_answers_every_request_in_flight_before_exit(
    tmp_path: Path,
    prefix: str,
    proxy: TcpProxy,
    amqp: AbstractRobustConnection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real ``serve``: 20 fast-path requests read and waiting on a stalled broker, SIGTERM,
    the broker back: every request is answered 204, the process exits 0, all 20 events are in
    the queue."""
    monkeypatch.setenv("GATEWAY_AMQP_URL", proxy.url_for(AMQP_URL))
    port = free_port()
    config = write_config(tmp_path / "gateway.toml", prefix, port, amqp={"publish_timeout_s": 20})
    serve = Serve.start(config, port, tmp_path)
    try:
        await serve.wait_ready()
        channel = await amqp.channel()
        queue = await channel.declare_queue(f"{prefix}.capture", durable=False)
        await queue.bind(prefix, routing_key="#")
        ids = [uuid.uuid4().hex for _ in range(20)]
        connections = [await asyncio.open_connection("127.0.0.1", port) for _ in ids]
        proxy.stall()
        for (_, writer), event_id in zip(connections, ids, strict=True):
            body = event(event_id)
            writer.write(
                b"POST /callbacks/legit HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"
                b"Content-Type: application/cloudevents+json\r\nContent-Length: %d\r\n\r\n%s"
                % (LEGIT_TOKEN.encode(), len(body), body)
            )
        await _until(lambda: _unread_server_sockets(port) == (len(ids), 0))
        serve.process.send_signal(signal.SIGTERM)

        async def listening() -> bool:
            try:
                _, probe = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return False
            probe.close()
            return True

        async with asyncio.timeout(10):
            while await listening():  # noqa: ASYNC110 (the listener closes first, then the drain)
                await asyncio.sleep(0.05)
        assert serve.process.poll() is None  # still draining: the requests wait on the broker
        proxy.resume()
        answers = [await read_answer(reader, 20.0) for reader, _ in connections]
        assert [answer.status for answer in answers] == [204] * len(ids)
        for _, writer in connections:
            writer.close()
        assert await asyncio.to_thread(serve.process.wait, 20) == 0
        assert sorted(await Capture(channel, queue.name).ids(len(ids))) == sorted(ids)
    finally:
        serve.stop()


async def _statuses_after_eof(gateway: Gateway, data: bytes) -> list[int]:
    """The statuses answered to ``data`` sent with the client's half-close right after it."""
    reader, writer = await connect(gateway)
    writer.write(data)
    writer.write_eof()
    return [answer.status for answer in await read_all(reader, 5.0)]


async def test_a_half_close_after_a_request_still_gets_its_answer(
    start: Start, capture: Capture
) -> None:
    """EOF right after a request: it is answered 204 and published, then the connection
    closes; a second pipelined one is neither answered nor published; half a request is
    dropped unanswered and unpublished. (aiohttp alone closes on the EOF without answering.)"""
    gateway = await start()
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    assert await _statuses_after_eof(gateway, callback(event(first))) == [204]
    assert await _statuses_after_eof(gateway, callback(event(second)) + callback()) == [204]
    assert await _statuses_after_eof(gateway, callback()[:-3]) == []
    assert sorted(await capture.ids(4, timeout=1.0)) == sorted([first, second])


@pytest.mark.slow
async def test_a_real_serve_on_uvloop_hands_over_pipelined_requests(
    tmp_path: Path, prefix: str
) -> None:
    """``serve`` (uvloop's transports): a request byte by byte, then fast, GET, chunked and
    fast requests in one write, all answered in order on one connection."""
    port = free_port()
    serve = Serve.start(write_config(tmp_path / "gateway.toml", prefix, port), port, tmp_path)
    try:
        await serve.wait_ready()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        def legit(body: bytes, headers: bytes = b"") -> bytes:
            length = b"" if headers else b"Content-Length: %d\r\n" % len(body)
            return (
                b"POST /callbacks/legit HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"
                b"Content-Type: application/cloudevents+json\r\n%s%s\r\n%s"
                % (LEGIT_TOKEN.encode(), headers, length, body)
            )

        for byte in legit(event()):
            writer.write(bytes([byte]))
            await writer.drain()
        assert (await read_answer(reader)).status == 204
        writer.write(
            legit(event())
            + b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"
            + legit(_chunked(event()), b"Transfer-Encoding: chunked\r\n")
            + legit(event())
        )
        answers = [await read_answer(reader) for _ in range(4)]
        assert [answer.status for answer in answers] == [204, 200, 204, 204]
        writer.close()
    finally:
        assert serve.stop() == 0


ANSWERED_SHAPES: dict[str, bytes] = {
    "accepted": callback(),
    "wrong token": callback(token=b"wrong"),
    "no token": callback().replace(b"Authorization: Bearer %s\r\n" % TOKEN, b""),
    "not JSON": callback(b"{nope"),
    "no id": callback(b'{"specversion":"1.0","source":"s","type":"t"}'),
    "wrong content type": callback().replace(b"application/cloudevents+json", b"text/plain"),
    "open source": callback(source=b"open"),
    "closing": callback(extra=b"Connection: close\r\n"),
    "closing, wrong token": callback(token=b"wrong", extra=b"Connection: close\r\n"),
}


@pytest.mark.parametrize("data", ANSWERED_SHAPES.values(), ids=ANSWERED_SHAPES.keys())
async def test_fast_answers_are_aiohttps_answers(start: Start, data: bytes) -> None:
    """Status, headers (but Date) and body of each answer are the same as aiohttp's."""
    answers = []
    for fast_path in (True, False):
        gateway = await start(fast_path=fast_path)
        reader, writer = await connect(gateway)
        writer.write(data)
        answer = await read_answer(reader)
        answer.headers.pop("date")
        answers.append(answer)
        writer.close()
    assert answers[0] == answers[1]


async def test_with_every_fast_connection_busy_a_new_one_is_refused(
    start: Start, capture: Capture, proxy: TcpProxy
) -> None:
    """max_connections=2, both answering (the broker stalled): a third is closed unanswered
    and counted as refused; the two busy ones still get their 204 once the broker is back."""
    gateway = await start(max_connections=2, amqp={"url": proxy.url_for(AMQP_URL)})
    proxy.stall()
    busy = [await connect(gateway) for _ in range(2)]
    for _, writer in busy:
        writer.write(callback())
    await _until(lambda: [c.task is not None for c in gateway.fast_connections()] == [True, True])
    reader, _ = await connect(gateway)
    assert await _closed_after(reader, 5.0) < 5.0
    assert gateway.guard.refused == 1
    proxy.resume()
    assert [(await read_answer(r)).status for r, _ in busy] == [204, 204]
    assert len(await capture.ids(2)) == 2


def test_timers_on_uvloop_do_not_spin_before_a_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """On uvloop (whole-millisecond timers that can fire a fraction of one early) a header
    timeout of 0.3333 s takes one timer call per connection, as on asyncio; re-arming for the
    fraction spun the loop (about 500 calls per connection)."""
    calls = 0
    on_timer = CallbackProtocol._on_timer

    def counting(protocol: CallbackProtocol) -> None:
        nonlocal calls
        calls += 1
        on_timer(protocol)

    monkeypatch.setattr(CallbackProtocol, "_on_timer", counting)

    async def connections() -> None:
        async def unused(request: web.BaseRequest) -> web.StreamResponse:
            raise AssertionError("no request is sent")

        guard = ConnectionGuard(
            web.Server(unused),
            cap=100,
            header_timeout_s=0.3333,
            body_timeout_s=1,
            keepalive_timeout_s=1,
        )
        transports = []
        for _ in range(20):
            transport = RecordingTransport()
            CallbackProtocol(guard, {}).connection_made(transport)
            transports.append(transport)
            await asyncio.sleep(0.0007)  # opened at different fractions of a millisecond
        deadline = asyncio.get_running_loop().time() + 10
        while not all(t.closed for t in transports):
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)

    uvloop.run(connections())
    assert calls == 20
