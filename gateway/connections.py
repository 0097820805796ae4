"""Client connections: timeouts for slow and idle clients, and a cap below the fd limit.

aiohttp closes an idle keep-alive connection (``keepalive_timeout``) but has no limit on how
long the request line and headers, or the body, may take, and no limit on open connections:
1,100 idle sockets under a 1,024 file-descriptor limit made ``accept`` fail for everyone.

``ConnectionGuard`` counts and times every client connection. The listening socket's
protocol factory (``gateway.runner.GatewayServer``) starts each one on the fast callback path
(``gateway.callback_protocol``, which keeps the same three timeouts itself and registers
through ``admit``/``forget``) or, with no callback sources or ``[http] fast_path = false``, on
a ``GuardedRequestHandler`` (aiohttp's, plus three phases); a fast connection handed to
aiohttp becomes one (``adopt``), keeping its place under the cap:

* waiting for a request (``IDLE``): aiohttp's keep-alive timer closes it;
* receiving the request line and headers (``HEADERS``, also from the moment it is opened):
  closed after ``header_timeout_s``;
* receiving the body (``BODY``): closed after ``body_timeout_s`` unless the body is complete.

At most ``max_connections`` are open, and never more than the file-descriptor limit leaves
after ``RESERVED_FDS`` (broker, state store, logs). A connection over the cap closes the one
that has waited longest without a request in progress; if every connection is busy the new
one is closed at once. Either way ``accept`` never runs out of descriptors, so ``/readyz``
and well-behaved senders keep getting in.

Private aiohttp state used: ``RequestHandler._messages`` (parsed, not yet handled requests),
checked by ``check_aiohttp`` at start.
"""

from __future__ import annotations

import asyncio
import resource
from enum import Enum
from typing import Any, Protocol

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from gateway.logs import get_logger
from gateway.memory import MemoryTrimmer
from gateway.problem import problem_response
from gateway.settings import HttpSettings

log = get_logger("gateway.connections")

# Descriptors kept for everything but client connections: the listening socket, the event
# loop's own, the broker connection(s), the state store under ``run``, logs, /proc reads.
RESERVED_FDS = 100
# aiohttp's per-connection read buffer (default 64 KiB; it pauses reading at twice this):
# what a connection holds of a body its handler has not asked for yet.
READ_BUFSIZE = 2**14
LOG_INTERVAL_S = 10.0  # at most one line per interval about closed or refused connections
# A request line and headers larger than this close the connection (logged as a malformed
# request, 431). aiohttp alone allows 128 headers of 8 KiB (1 MiB a request, held twice, as bytes
# and as str): 300 connections sending such heads took the ingress from 63 to 956 MB.
MAX_HEAD_BYTES = 2**16
_HEAD_TOO_LARGE_BODY = (
    b'{"type":"about:blank","title":"Request Header Fields Too Large","status":431,'
    b'"detail":"the request line and headers are larger than 65536 bytes"}'
)
HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: application/problem+json\r\n"
    b"Server: event-gateway\r\nConnection: close\r\n"
    + f"Content-Length: {len(_HEAD_TOO_LARGE_BODY)}\r\n\r\n".encode()
    + _HEAD_TOO_LARGE_BODY
)
# Give freed memory back once the open connections fall under half their peak (if >= this).
TRIM_AFTER_CONNECTIONS = 64
SERVER_NAME = "event-gateway"  # the Server header: no version banner
# The [http] settings the server applies (set by ``create_app``; defaults when absent).
HTTP_SETTINGS = web.AppKey("http_settings", HttpSettings)


class Phase(Enum):
    IDLE = 0
    HEADERS = 1
    BODY = 2
    BUSY = 3


def connection_cap(max_connections: int) -> int:
    """``max_connections``, raising the soft fd limit as far as the hard one allows, lowered
    to what the limit leaves after ``RESERVED_FDS``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + RESERVED_FDS
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if raised > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return max(1, min(max_connections, soft - RESERVED_FDS))


def check_aiohttp() -> None:
    """Fail at start, not under load, if aiohttp's internals moved."""
    if "_messages" not in RequestHandler.__init__.__code__.co_names:
        raise RuntimeError("aiohttp.web_protocol.RequestHandler has no _messages queue")


class GuardedConnection(Protocol):
    """A client connection the guard counts: aiohttp's handler or the fast path's protocol."""

    def force_close(self) -> None: ...


class ConnectionGuard:
    """At most ``cap`` connections, and their timeouts. Calling it makes a
    ``GuardedRequestHandler``; ``gateway.callback_protocol`` connections register themselves
    through ``admit``/``forget`` and hand over to one made by ``adopt``."""

    def __init__(
        self,
        server: web.Server,
        *,
        cap: int,
        header_timeout_s: float,
        body_timeout_s: float,
        keepalive_timeout_s: float,
    ) -> None:
        check_aiohttp()
        self.server = server
        self.cap = cap
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self.keepalive_timeout_s = keepalive_timeout_s
        self.open: set[GuardedConnection] = set()
        # Connections without a request in progress, oldest first (dicts keep insertion order).
        self.idle: dict[GuardedConnection, None] = {}
        self.evicted = 0
        self.refused = 0
        self._peak = 0
        self._trimmer = MemoryTrimmer()
        self.header_timeouts = 0
        self.body_timeouts = 0
        self.malformed_requests = 0
        self._warned_at = self._timeouts_logged_at = self._malformed_logged_at = -1e9

    def __call__(self) -> GuardedRequestHandler:
        return GuardedRequestHandler(
            self,
            self.server,
            loop=asyncio.get_running_loop(),
            keepalive_timeout=self.keepalive_timeout_s,
            access_log=None,
            read_bufsize=READ_BUFSIZE,
        )

    def adopt(
        self, connection: GuardedConnection, *, header_timeout_s: float | None = None
    ) -> GuardedRequestHandler:
        """An aiohttp handler that takes over ``connection``'s socket (and its place under
        the cap, without counting it twice); ``header_timeout_s``: what is left of the
        header timeout of a request head still arriving."""
        handler = self()
        handler.adopted = True
        if header_timeout_s is not None:
            handler.first_header_timeout_s = max(0.0, header_timeout_s)
        self.open.discard(connection)
        self.idle.pop(connection, None)
        self.open.add(handler)
        return handler

    def admit(self, handler: GuardedConnection) -> bool:
        """Count a new connection; over the cap, close the longest-idle one (or refuse)."""
        if len(self.open) >= self.cap:
            if self.idle:
                oldest = next(iter(self.idle))
                self.evicted += 1
                self._warn("connection limit reached: closing the longest-idle connection")
                oldest.force_close()
                self.forget(oldest)
            else:
                self.refused += 1
                self._warn("connection limit reached and every connection is busy: refusing")
                return False
        self.open.add(handler)
        if len(self.open) > self._peak:
            self._peak = len(self.open)
        return True

    def forget(self, handler: GuardedConnection) -> None:
        self.open.discard(handler)
        self.idle.pop(handler, None)
        if self._peak >= TRIM_AFTER_CONNECTIONS and 2 * len(self.open) < self._peak:
            self._peak = len(self.open)  # a burst of connections is over: what they read is
            self._trimmer.request()  # freed, give it back (gateway.memory)

    def timed_out(self, phase: Phase) -> None:
        """Count a connection closed by a timeout; one summary line per 10 s at most (a flood
        of idle connections must not become a flood of log lines)."""
        if phase is Phase.HEADERS:
            self.header_timeouts += 1
        else:
            self.body_timeouts += 1
        now = asyncio.get_running_loop().time()
        if now - self._timeouts_logged_at >= LOG_INTERVAL_S:
            self._timeouts_logged_at = now
            log.info(
                "slow clients closed",
                header_timeouts=self.header_timeouts,
                body_timeouts=self.body_timeouts,
            )

    def malformed(self, status: int, error: str) -> None:
        """Count a request aiohttp could not parse; a line per interval at most, naming the
        last one (never its bytes)."""
        self.malformed_requests += 1
        now = asyncio.get_running_loop().time()
        if now - self._malformed_logged_at >= LOG_INTERVAL_S:
            self._malformed_logged_at = now
            log.info("malformed request", status=status, error=error, count=self.malformed_requests)

    def _warn(self, message: str) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._warned_at >= LOG_INTERVAL_S:  # one line per interval, not per connection
            self._warned_at = now
            log.warning(message, cap=self.cap, evicted=self.evicted, refused=self.refused)


class GuardedRequestHandler(RequestHandler):
    """aiohttp's request handler with header and body timeouts, counted by the guard."""

    def __init__(self, guard: ConnectionGuard, server: web.Server, **kwargs: Any) -> None:
        super().__init__(server, **kwargs)
        self._guard = guard
        self._phase = Phase.HEADERS
        self._timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0  # of the request line and headers arriving (MAX_HEAD_BYTES)
        # The body of a request answered before it was read (an early 503 or 413): aiohttp
        # drains it after the answer, and its bytes are no request head.
        self._draining: Any = None
        self.adopted = False  # taken over from the fast path: already counted
        self.first_header_timeout_s = guard.header_timeout_s

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self.adopted and not self._guard.admit(self):
            self.force_close()
            return
        self._guard.idle[self] = None
        self._arm(self.first_header_timeout_s, Phase.HEADERS)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        self._guard.forget(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        queued = len(self._messages)
        super().data_received(data)
        if len(self._messages) > queued:  # a request line and headers are complete
            self._head_bytes = 0
            self._disarm()
            self._guard.idle.pop(self, None)
            payload = self._messages[-1][1]
            if payload.is_eof():
                self._phase = Phase.BUSY
            else:
                self._arm(self._guard.body_timeout_s, Phase.BODY, payload)
        elif self._draining is not None and not self._draining.is_eof():
            pass  # the rest of an answered request's body, which aiohttp is draining
        elif self._phase is Phase.HEADERS or self._phase is Phase.IDLE:
            self._draining = None
            self._head_bytes += len(data)  # a head still incomplete: at most MAX_HEAD_BYTES
            if self._head_bytes > MAX_HEAD_BYTES and self.transport is not None:
                self._guard.malformed(431, "request head too large")
                self.transport.write(HEAD_TOO_LARGE)  # no request exists to answer through
                self.force_close()
            elif self._phase is Phase.IDLE and data:  # the first bytes of the next request
                self._arm(self._guard.header_timeout_s, Phase.HEADERS)

    async def finish_response(
        self, request: BaseRequest, resp: StreamResponse, start_time: float | None
    ) -> tuple[StreamResponse, bool]:
        if resp is not None and not resp.prepared:
            resp.headers["Server"] = SERVER_NAME
        result = await super().finish_response(request, resp, start_time)
        self._draining = None if request.content.is_eof() else request.content
        if not self._messages and self.transport is not None:
            # Answered: waiting for the next request (a body still arriving is aiohttp's to
            # drain, for at most its lingering time).
            self._disarm()
            self._phase = Phase.IDLE
            self._guard.idle[self] = None
        return result

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> StreamResponse:
        """A request aiohttp could not parse: one log line without the request's bytes (the
        parser's message quotes them, credentials included), and a problem+json answer."""
        if request.writer.output_size > 0:  # as aiohttp: too late for another response
            raise ConnectionError("response already sent, cannot send an error")
        if isinstance(exc, ConnectionError):
            log.info("client gone before the answer", error=type(exc).__name__)
        elif status >= 500:
            log.error("request failed", status=status, error=type(exc).__name__)
        else:
            self._guard.malformed(status, type(exc).__name__)
        detail = (
            "internal error; the request was not accepted"
            if status >= 500
            else "the request could not be read as HTTP/1.1"
        )
        response = problem_response(status, detail)
        response.force_close()
        return response

    def _arm(self, delay: float, phase: Phase, payload: Any = None) -> None:
        self._phase = phase
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(delay, self._expire, phase, payload)

    def _disarm(self) -> None:
        self._phase = Phase.BUSY
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, phase: Phase, payload: Any) -> None:
        self._timer = None
        if self._phase is not phase or self.transport is None:
            return
        if phase is Phase.BODY and payload.is_eof():
            self._phase = Phase.BUSY
            return
        self._guard.timed_out(phase)
        self.force_close()
