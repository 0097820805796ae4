"""The prebuilt 204: exact bytes on a keep-alive HTTP/1.1 connection (several requests on one
connection), aiohttp's own answer for HTTP/1.0 and for a client asking to close."""

from __future__ import annotations

import asyncio
import email.utils
import re

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.connections import SERVER_NAME, ConnectionGuard
from gateway.no_content import NoContent, _date

DATE = re.compile(rb"Date: ([^\r]+)\r\n")


async def _serve(handler: Handler) -> tuple[web.AppRunner, asyncio.Server, int]:
    """A runner with the ingress's connection guard (its Server header) on a free port."""
    app = web.Application()
    app.router.add_post("/x", handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    assert runner.server is not None
    guard = ConnectionGuard(
        runner.server, cap=16, header_timeout_s=5, body_timeout_s=5, keepalive_timeout_s=5
    )
    server = await asyncio.get_running_loop().create_server(guard, "127.0.0.1", 0)
    return runner, server, server.sockets[0].getsockname()[1]


async def _close(runner: web.AppRunner, server: asyncio.Server) -> None:
    server.close()
    await runner.cleanup()


async def _no_content(_request: web.Request) -> web.StreamResponse:
    return NoContent()


async def _read_answer(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)


async def test_keep_alive_requests_get_the_prebuilt_answer() -> None:
    """Three requests on one connection: three identical 204s (Server, Date), no body."""
    runner, server, port = await _serve(_no_content)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(3):
            writer.write(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}")
            answer = await _read_answer(reader)
            date = DATE.search(answer)
            assert date is not None
            assert answer == (
                b"HTTP/1.1 204 No Content\r\nServer: " + SERVER_NAME.encode() + b"\r\n"
                b"Date: " + date.group(1) + b"\r\n\r\n"
            )
            assert email.utils.parsedate_to_datetime(date.group(1).decode()) is not None
        writer.close()
    finally:
        await _close(runner, server)


async def test_http_10_and_connection_close_get_aiohttps_answer() -> None:
    """HTTP/1.0 and ``Connection: close`` go through aiohttp (204, then the server closes)."""
    runner, server, port = await _serve(_no_content)
    try:
        for request in (
            b"POST /x HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}",
            b"POST /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            answer = await asyncio.wait_for(reader.read(), 5)  # read to EOF: it was closed
            assert answer.split(b"\r\n", 1)[0].endswith(b" 204 No Content")
            assert b"Server: " + SERVER_NAME.encode() in answer
            writer.close()
    finally:
        await _close(runner, server)


def test_the_date_is_an_imf_fixdate_of_now() -> None:
    """The cached Date is what ``email.utils.formatdate(usegmt=True)`` gives (same second)."""
    for _ in range(3):
        before = email.utils.formatdate(usegmt=True)
        ours = _date.now().decode()
        after = email.utils.formatdate(usegmt=True)
        if before == after:
            assert ours == before
            return
    raise AssertionError("the second changed three times in a row")
