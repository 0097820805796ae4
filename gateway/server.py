"""Running the ingress until a signal: the written shutdown sequence.

1. SIGTERM/SIGINT sets ``stop``; a second signal exits at once.
2. The listening socket closes; requests in flight finish (bounded by ``SHUTDOWN_TIMEOUT_S``)
   so every sender gets its 204 or 503.
3. The cleanup contexts close the publisher's connection.
Other long-running parts (the built-in workers under ``run``) are coroutines that watch the
same ``stop`` event; they drain while the ingress does.

The listening socket's protocol factory is the ``gateway.runner.GatewayServer``: callbacks on
the fast path (``gateway.callback_protocol``), anything else through aiohttp, both under one
``gateway.connections.ConnectionGuard`` (header, body and keep-alive timeouts and at most
``max_connections`` clients, below the fd limit).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from aiohttp import web

from gateway.connections import HTTP_SETTINGS
from gateway.logs import get_logger
from gateway.runner import GatewayRunner, GatewayServer
from gateway.settings import HttpSettings

log = get_logger("gateway.server")

SHUTDOWN_TIMEOUT_S = 15.0
# A connection's socket buffer, which is also the most one read hands to aiohttp. The
# default (autotuned up to megabytes) let 900 connections that each sent a 256 KiB body
# nobody reads (a wrong token) hold 295 MB in the process before their 401s; with 32 KiB
# (the kernel doubles it) and a 16 KiB aiohttp read buffer: 124 MB. Callback bodies are
# small; a 256 KiB one still arrives in a few round trips.
RECEIVE_BUFFER_BYTES = 32768


def install_signal_handlers(stop: asyncio.Event) -> None:
    """First SIGTERM/SIGINT asks for a graceful stop; the second one exits immediately."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            log.warning("second signal, exiting now", signal=signal.Signals(signum).name)
            os._exit(1)
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)


async def serve_app(
    app: web.Application,
    host: str,
    port: int,
    stop: asyncio.Event,
    *,
    companions: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
    reuse_port: bool = False,
) -> None:
    """Serve ``app`` until ``stop`` is set, running ``companions`` alongside. ``reuse_port``:
    one of several processes on the same port (``serve --workers N``)."""
    runner = GatewayRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S
    )
    await runner.setup()
    server = runner.server
    assert isinstance(server, GatewayServer)
    http = app.get(HTTP_SETTINGS) or HttpSettings()
    cap = server.guard.cap
    try:
        listener = await asyncio.get_running_loop().create_server(
            server, host, port, backlog=1024, reuse_address=True, reuse_port=reuse_port or None
        )
    except OSError as exc:
        await runner.cleanup()
        raise SystemExit(f"event-gateway: cannot listen on {host}:{port}: {exc.strerror}") from None
    for sock in listener.sockets:  # inherited by every accepted connection
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
    if cap < http.max_connections:
        log.warning(
            "max_connections lowered to fit the file-descriptor limit",
            max_connections=http.max_connections,
            cap=cap,
        )
    log.info("listening", host=host, port=port, max_connections=cap)
    tasks = [asyncio.create_task(companion()) for companion in companions]
    try:
        await stop.wait()
    finally:
        listener.close()  # stop accepting; then drain what is in flight
        await runner.cleanup()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error("component failed", error=repr(result))
    log.info("stopped")
