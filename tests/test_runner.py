"""``GatewayServer``'s shutdown of fast-path connections (gateway.runner), and a fast-path
connection whose answer fails closing instead of hanging (gateway.callback_protocol)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.callback_protocol import CallbackProtocol
from gateway.callback_request import CallbackHandler, CallbackRequest
from gateway.no_content import NoContent
from gateway.runner import GatewayServer
from gateway.settings import HttpSettings
from tests.recording_transport import RecordingTransport

REQUEST = b"POST /callbacks/camara HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n{}"


async def _unused(request: web.BaseRequest) -> web.StreamResponse:
    raise AssertionError("aiohttp's handler is not reached by a fast request")


def _connect(
    handler: CallbackHandler, data: bytes = REQUEST
) -> tuple[GatewayServer, CallbackProtocol, RecordingTransport]:
    """A fast-path connection of a ``GatewayServer`` routing the callback to ``handler``,
    fed ``data``."""
    routes = {b"/callbacks/camara": ("/callbacks/camara", handler)}
    server = GatewayServer(web.Server(_unused), HttpSettings(), routes)
    protocol = server()
    assert isinstance(protocol, CallbackProtocol)
    transport = RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(data)
    return server, protocol, transport


async def test_shutdown_cancels_an_answer_past_the_timeout_and_closes_its_connection() -> None:
    """A request still being answered when the shutdown timeout ends is cancelled and its
    connection closed (as aiohttp does its own), not left running past the publisher's close."""
    started = asyncio.Event()

    async def stalled(request: CallbackRequest) -> web.StreamResponse:
        started.set()
        await asyncio.Event().wait()  # a publish waiting on a broker that never answers
        raise AssertionError("not reached")

    server, protocol, transport = _connect(stalled)
    task = protocol.task
    assert task is not None
    await asyncio.wait_for(started.wait(), 5)
    server.pre_shutdown()
    assert not transport.closed  # busy: closed after its answer, or at the timeout
    await server.shutdown(0.05)
    assert transport.closed
    await asyncio.wait([task], timeout=5)
    assert task.cancelled()
    assert not transport.written


async def test_an_answer_that_fails_past_the_problem_guard_closes_the_connection() -> None:
    """A handler exception ``problem_for`` does not turn into an answer (a redirect) closes the
    connection: with no timer on a busy connection, the client would otherwise wait forever."""

    async def redirects(request: CallbackRequest) -> web.StreamResponse:
        raise web.HTTPFound("/elsewhere")

    _, protocol, transport = _connect(redirects)
    task = protocol.task
    assert task is not None
    await asyncio.wait([task], timeout=5)
    assert isinstance(task.exception(), web.HTTPFound)
    assert transport.closed
    assert protocol.task is None
    assert not transport.written


async def test_a_body_still_arriving_at_shutdown_is_answered_then_closed() -> None:
    """A request whose head is whole and whose body is still arriving when shutdown starts is
    in progress, as aiohttp counts it: it is answered (``Connection: close``) and shutdown
    waits for that, instead of closing the connection under it."""
    bodies: list[bytes] = []

    async def accept(request: CallbackRequest) -> web.StreamResponse:
        bodies.append(await request.read())
        return NoContent()

    server, protocol, transport = _connect(accept, REQUEST[:-1])  # all but the body's last byte
    server.pre_shutdown()
    assert not transport.closed
    shutdown = asyncio.create_task(server.shutdown(5))
    await asyncio.sleep(0)
    assert not shutdown.done()
    protocol.data_received(REQUEST[-1:])
    await asyncio.wait_for(shutdown, 5)
    assert bodies == [b"{}"]
    assert transport.written.startswith(b"HTTP/1.1 204 No Content\r\n")
    assert b"Connection: close\r\n" in transport.written
    assert transport.closed
