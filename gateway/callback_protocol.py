"""The lean HTTP/1.1 protocol of the callback hot path, with aiohttp behind it.

aiohttp spends about 50 µs of CPU on each request here before a handler runs or after it
returns (its parser's message and payload objects, the request and writer objects, the
keep-alive machinery, the response's header handling): as much as a whole Node.js gateway
spends on a callback. A callback is one small shape (``gateway.fast_http``), so each
connection starts on ``CallbackProtocol``: it reads whole ``POST /callbacks/<name>`` requests
itself, hands them to the same source handler inside the same problem+json guard, and writes
the answer as one buffer. The first request of any other shape hands the connection to
aiohttp (``ConnectionGuard.adopt``: a ``GuardedRequestHandler`` with the same timeouts,
limits and counters) from that request's first byte, for the rest of the connection.

Each connection handles one request at a time, in order (pipelined requests wait in the
buffer; past ``PAUSE_READING_AT`` bytes the socket stops being read, and a client that does
not read its answers stops being served until it does). The guard's timeouts hold here too,
with one timer per connection that is only moved when a deadline comes earlier: a request
line and headers within ``header_timeout_s``, the body within ``body_timeout_s``, the next
request within ``keepalive_timeout_s``.
"""

from __future__ import annotations

import asyncio
from typing import cast

from gateway.app import problem_for
from gateway.connections import ConnectionGuard, Phase
from gateway.fast_http import (
    FAST_HEAD_MAX,
    HANDOFF,
    INCOMPLETE,
    FastHead,
    FastRequest,
    Routes,
    encode_response,
    parse_head,
)

# Bytes of pipelined requests held while one is answered before the socket stops being read.
PAUSE_READING_AT = 2**15
# uvloop's timers count whole milliseconds and may fire a fraction of one before a deadline
# as ``loop.time()`` reads it; re-arming for that fraction spun the loop until its clock
# ticked over (25,000 timer calls for 50 connections with a 0.3333 s timeout; asyncio: 50).
# A deadline this close counts as reached.
TIMER_SLACK_S = 0.001


class CallbackProtocol(asyncio.Protocol):
    """One client connection on the fast path (module docstring)."""

    def __init__(self, guard: ConnectionGuard, routes: Routes) -> None:
        self._guard = guard
        self._routes = routes
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._remote: str | None = None
        self._pending = bytearray()  # received, not yet handled
        self._scanned = 0  # bytes of it searched for the end of a head, in vain
        self._head: FastHead | None = None  # parsed, waiting for its body
        self.task: asyncio.Task[None] | None = None  # the request being answered
        self._phase = Phase.HEADERS
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._reading_paused = False
        self._writing_paused = False
        self._eof = False
        self._closing = False
        # Made at shutdown for a request in progress: done once it is answered (or given up)
        # or the connection is gone (``GatewayServer.shutdown`` waits for it).
        self._drained: asyncio.Future[None] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport = transport
        if not self._guard.admit(self):
            transport.close()
            return
        peer = transport.get_extra_info("peername")
        self._remote = str(peer[0]) if isinstance(peer, (list, tuple)) else None
        self._guard.idle[self] = None
        self._expect(Phase.HEADERS, self._guard.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        pending = self._pending
        pending += data  # amortised: a body dripping in is not copied again per read
        if self.task is not None or self._writing_paused:
            if len(pending) > PAUSE_READING_AT and not self._reading_paused:
                self._pause_reading()
            return
        self._next()

    def eof_received(self) -> bool:
        self._eof = True
        return self.task is not None  # keep the socket open to write the answer in progress

    def connection_lost(self, exc: BaseException | None) -> None:
        self._transport = None
        self._cancel_timer()
        self._guard.forget(self)
        self._settle()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self.task is None and self._pending and self._transport is not None:
            self._next()

    # ConnectionGuard's view

    def force_close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def close_when_idle(self) -> asyncio.Future[None] | None:
        """Shutting down: close now if no request is in progress, else after its answer. A
        request is in progress from its whole head on, as aiohttp counts it: one whose body
        is still arriving is answered too. Returns, for such a request, a future done once
        it is answered (or given up) or the connection is gone."""
        self._closing = True
        if self.task is None and self._head is None:
            self.force_close()
            return None
        self._drained = self._loop.create_future()
        if self.task is not None:
            self.task.add_done_callback(self._settle)
        return self._drained

    def _settle(self, _: object = None) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # requests

    def _next(self) -> None:
        """Handle the request at the start of the buffer, if it is whole."""
        pending = self._pending
        head = self._head
        if head is None:
            # Only the new bytes are searched for the end of the head (a head dripping in
            # byte by byte is not scanned again from the start for each byte).
            if pending.find(b"\r\n\r\n", max(0, self._scanned - 3)) < 0:
                self._scanned = len(pending)
                parsed: object = INCOMPLETE if len(pending) < FAST_HEAD_MAX else HANDOFF
            else:
                parsed = parse_head(pending, self._routes)
            if parsed is INCOMPLETE:
                if self._phase is Phase.IDLE and pending:  # the first bytes of a request
                    self._expect(Phase.HEADERS, self._guard.header_timeout_s)
                return
            if parsed is HANDOFF:
                self._handoff()
                return
            assert isinstance(parsed, FastHead)
            head = parsed
        if len(pending) < head.body_end:
            if self._head is None:
                self._head = head
                # A request in progress (as aiohttp's handler counts it once its head is
                # whole): not the longest-idle connection the cap may close.
                self._guard.idle.pop(self, None)
                self._expect(Phase.BODY, self._guard.body_timeout_s)
            return
        self._head = None
        self._scanned = 0
        body = bytes(pending[head.body_start : head.body_end])
        del pending[: head.body_end]
        self._phase = Phase.BUSY
        self._guard.idle.pop(self, None)
        self.task = self._loop.create_task(
            self._answer(head, FastRequest(head, body, self._remote))
        )
        if self._drained is not None:  # shutting down: its body came after close_when_idle
            self.task.add_done_callback(self._settle)

    async def _answer(self, head: FastHead, request: FastRequest) -> None:
        try:
            try:
                response = await head.handler(request)
            except Exception as exc:  # the problem+json guard of aiohttp's path (gateway.app)
                response = problem_for(exc, head.path)
            keep_alive = head.keep_alive and response.keep_alive is not False and not self._closing
            answer = encode_response(response, keep_alive)
        except BaseException:
            # Cancelled at shutdown, or a bug past the guard (problem_for re-raising, an
            # unencodable header): no answer comes, and no timer watches a busy connection,
            # so close it rather than leave the client waiting. The error stays the task's.
            self.task = None
            self.force_close()
            raise
        transport = self._transport
        self.task = None
        if transport is None or transport.is_closing():
            return  # the client is gone; what was accepted is published all the same
        transport.write(answer)
        if not keep_alive or self._eof:
            transport.close()
            return
        self._guard.idle[self] = None
        self._expect(Phase.IDLE, self._guard.keepalive_timeout_s)
        if self._reading_paused and len(self._pending) <= PAUSE_READING_AT:
            # Only once what is held has been answered down: resuming after every answer
            # let each one add a whole read (256 KiB) to the buffer, without bound.
            self._reading_paused = False
            transport.resume_reading()
        if self._pending and not self._writing_paused:
            self._next()

    def _handoff(self) -> None:
        """Give the connection, from the request at the start of the buffer, to aiohttp."""
        transport = self._transport
        assert transport is not None
        self._transport = None
        self._cancel_timer()
        # A head still arriving keeps what is left of its header timeout, not a new one.
        left_s = self._deadline - self._loop.time() if self._phase is Phase.HEADERS else None
        handler = self._guard.adopt(self, header_timeout_s=left_s)
        transport.set_protocol(handler)
        handler.connection_made(transport)
        pending, self._pending = bytes(self._pending), bytearray()
        if self._reading_paused:
            transport.resume_reading()
        if pending:
            handler.data_received(pending)

    def _pause_reading(self) -> None:
        if self._transport is not None:
            self._reading_paused = True
            self._transport.pause_reading()

    # timeouts: one timer, moved only when a deadline comes earlier than it

    def _expect(self, phase: Phase, within_s: float) -> None:
        self._phase = phase
        deadline = self._deadline = self._loop.time() + within_s
        if self._timer is None or deadline < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._phase is Phase.BUSY or self._transport is None:
            return
        if self._loop.time() < self._deadline - TIMER_SLACK_S:
            self._timer_at = self._deadline
            self._timer = self._loop.call_at(self._deadline, self._on_timer)
            return
        if self._phase is not Phase.IDLE:
            self._guard.timed_out(self._phase)
        self._transport.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
