"""The ingress's aiohttp runner: the fast callback path and the connection guard in front of
the application, for ``serve`` and for the tests alike.

``GatewayRunner`` is an ``AppRunner`` whose server (``GatewayServer``) is the listening
socket's protocol factory: each connection starts on ``gateway.callback_protocol`` when the
app has callback sources and ``[http] fast_path`` is on, or on aiohttp's guarded handler
otherwise, both counted and timed by one ``ConnectionGuard``. Requests that reach aiohttp
still skip its router for a configured callback path (``gateway.dispatch``). Shutdown drains
both kinds: idle connections close, requests in progress (being answered, or their body
arriving) finish within the runner's shutdown timeout (the rest are cancelled and their
connections closed), then the app's cleanup closes the publisher.

Private aiohttp state used: ``Server._loop`` and ``Server._kwargs`` (to remake the server
``AppRunner`` made); renamed, ``setup`` fails at start with an ``AttributeError``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from gateway.app import CALLBACK_ROUTES
from gateway.callback_protocol import CallbackProtocol
from gateway.connections import HTTP_SETTINGS, ConnectionGuard, connection_cap
from gateway.dispatch import lean_dispatch
from gateway.fast_http import Routes
from gateway.settings import HttpSettings


class GatewayServer(web.Server):
    """aiohttp's ``Server`` for the app, made from it, whose connections start guarded."""

    def __init__(self, base: web.Server, http: HttpSettings, routes: Routes) -> None:
        super().__init__(
            base.request_handler,
            request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation,
            loop=base._loop,
            **base._kwargs,
        )
        self.fast_routes = routes
        # pre_shutdown → shutdown: each fast connection with a request in progress, by the
        # future its close_when_idle returned.
        self._in_progress: dict[asyncio.Future[None], CallbackProtocol] = {}
        self.guard = ConnectionGuard(
            self,
            cap=connection_cap(http.max_connections),
            header_timeout_s=http.header_timeout_s,
            body_timeout_s=http.body_timeout_s,
            keepalive_timeout_s=http.keepalive_timeout_s,
        )

    def __call__(self) -> Any:  # an asyncio.Protocol: aiohttp's handler or the fast path
        if self.fast_routes:
            return CallbackProtocol(self.guard, self.fast_routes)
        return self.guard()

    def pre_shutdown(self) -> None:
        super().pre_shutdown()
        for connection in list(self.guard.open):
            if isinstance(connection, CallbackProtocol):
                drained = connection.close_when_idle()
                if drained is not None:
                    self._in_progress[drained] = connection

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (aiohttp's)
        """Let the fast-path requests in progress at ``pre_shutdown`` (being answered, or their
        body arriving) finish within ``timeout``, then cancel the rest and close their
        connections, as aiohttp's ``RequestHandler.shutdown`` does its own."""
        in_progress, self._in_progress = self._in_progress, {}
        if in_progress:
            started = self._loop.time()
            _, late = await asyncio.wait(in_progress, timeout=timeout)
            for drained in late:
                connection = in_progress[drained]
                if connection.task is not None:
                    connection.task.cancel()
                connection.force_close()
            if timeout is not None:  # one shutdown timeout for both kinds, not one each
                timeout = max(0.0, timeout - (self._loop.time() - started))
        await super().shutdown(timeout)


class GatewayRunner(web.AppRunner):
    """``AppRunner`` serving through ``GatewayServer`` (module docstring)."""

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()
        routes = self.app.get(CALLBACK_ROUTES) or {}
        if routes:
            base.request_handler = lean_dispatch(routes, base.request_handler)
        http = self.app.get(HTTP_SETTINGS) or HttpSettings()
        fast = {path.encode(): (path, handler) for path, handler in routes.items()}
        return GatewayServer(base, http, fast if http.fast_path else {})
