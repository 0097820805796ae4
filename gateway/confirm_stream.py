"""Publishing on one confirm-mode aiormq channel by writing encoded frames to its socket.

aiormq's ``basic_publish`` costs several hundred microseconds of Python per message here: two
async context managers, a lock, a timeout, pamqp objects for every frame, a bounded queue and a
writer task that wakes once per message. The ingress publishes a lot of small messages on one
channel that does nothing else, so it takes the short way: encode the frames
(``gateway.amqp_wire``), take the next delivery tag and register the confirm future in the
channel exactly as ``basic_publish`` does, and write the bytes to the connection's stream in
the same synchronous step, so frames reach the socket in delivery-tag order. aiormq still owns
everything else: the handshake, reading frames, resolving confirms, failing its futures when
the channel or connection closes (one of them fails the stream's pending confirms), heartbeats
and the rest of the protocol.

The stream comes from ``StreamTracker``, an aiormq ``TransportFactory`` (a public extension
point) that remembers the stream of the newest connection it opened. It also puts a
``gateway.ack_reader.AckReader`` in front of the connection's reader: the ``basic.ack``/``nack``
frames of this channel are picked out of the raw bytes and each confirmed tag handed to aiormq's
``Channel._confirm_delivery``, without aiormq's per-frame reading and decoding.

It relies on aiormq internals (``Channel.delivery_tag``, ``Channel.confirmations``,
``Channel.create_future``, the connection's transport): ``gateway.fast_path_check`` checks them
whenever a stream is opened, and the publisher falls back to plain aio-pika publishing
(``gateway.standard_publisher``) when the check or a publish fails in an unexpected way.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from aiormq.channel import Channel
from aiormq.connection import TCPTransportFactory, TLSTransportFactory, TransportFactory
from yarl import URL

from gateway.ack_reader import READERS as ACK_READERS
from gateway.ack_reader import AckReader
from gateway.amqp_wire import Outgoing, PublishEncoder

# Bytes the socket may hold unsent before a publish waits for it to drain (at most the publish
# timeout, then it fails): a burst of big batches makes other requests wait their turn instead
# of failing, and a broker that stopped reading (a memory or disk alarm blocks publishers that
# way) can't grow the buffer without bound while the senders retry.
MAX_UNSENT_BYTES = 1024 * 1024
# Publishes the broker has not answered yet, at most, before a request waits its turn (in
# arrival order) to write: a burst of big batches goes to the broker at the pace it confirms,
# and another request waits behind at most this many messages plus one chunk per waiting
# request, not behind the whole burst (the kernel's socket buffers alone hold megabytes).
MAX_UNANSWERED = 4096
# How long a publish waiting for the socket to drain sleeps when the transport is over the
# limit without having paused writing (its high-water mark is above the limit).
DRAIN_POLL_S = 0.005
# How often answered confirms are dropped from the deadline queue while publishes are pending.
SWEEP_INTERVAL_S = 0.25


class StreamTracker(TransportFactory):
    """Opens connections as aiormq would (TLS for ``amqps``) and keeps the newest stream."""

    def __init__(self) -> None:
        self.writer: asyncio.StreamWriter | None = None

    async def create(
        self, url: URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        factory = TLSTransportFactory() if url.scheme == "amqps" else TCPTransportFactory()
        reader, writer = await factory.create(url, **kwargs)
        AckReader.attach(reader, writer)  # confirms read from the raw bytes (gateway.ack_reader)
        self.writer = writer
        return reader, writer


class ConfirmStream:
    """Publishes on ``channel`` (confirm mode, used for nothing else) through ``writer``.

    Frames written in one turn of the event loop go out in one write. A confirm that has not
    come ``timeout_s`` after its publish is cancelled: one deadline queue for the stream instead
    of a timer per request (the deadlines arrive in order, the timeout being the same for all).
    """

    def __init__(
        self,
        channel: Channel,
        writer: asyncio.StreamWriter,
        *,
        timeout_s: float,
        delivery_mode: int,
        app_id: str,
        max_unsent_bytes: int = MAX_UNSENT_BYTES,
        max_unanswered: int = MAX_UNANSWERED,
    ) -> None:
        self.channel = channel
        self._max_unsent = max_unsent_bytes
        self._max_unanswered = max_unanswered
        self._unanswered = 0  # published, confirm not in (nor cancelled) yet
        self._granted = 0  # messages that woken waiters are about to publish
        self._waiters: deque[tuple[asyncio.Future[None], int]] = deque()
        self._writer = writer
        self._transport = writer.transport
        self._unsent: list[bytes] = []
        self._loop = asyncio.get_running_loop()
        self._timeout_s = timeout_s
        self._deadlines: deque[tuple[float, asyncio.Future[Any]]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        # A confirm went unanswered past its deadline, and none answered since: the broker
        # (or the way to it) has stalled. Cleared by the next answered confirm.
        self.stalled = False
        self._encoder = PublishEncoder(
            channel.number,
            channel.max_content_size,
            delivery_mode=delivery_mode,
            app_id=app_id,
        )
        acks = ACK_READERS.get(writer)
        if acks is not None:  # this channel's confirms are resolved as they arrive
            acks.register(channel)
        # The one future registered with the channel's future store: closing the channel or
        # its connection fails it, and it fails every confirm still pending. The confirms are
        # plain futures: a store-made one costs two store entries and three done callbacks
        # (each a loop callback when it resolves), about 4 µs a message.
        self._closed = channel.create_future()
        self._closed.add_done_callback(self._fail_pending)

    @property
    def usable(self) -> bool:
        """The channel is open and its connection's socket too."""
        return not self.channel.is_closed and not self._transport.is_closing()

    @property
    def pending(self) -> int:
        """Publishes still in the deadline queue (unanswered, or answered but not yet swept)."""
        return len(self._deadlines)

    @property
    def unsent_bytes(self) -> int:
        """Bytes written to the socket's transport that it has not sent yet."""
        return self._transport.get_write_buffer_size()

    def writable(self, count: int = 1) -> bool:
        """``count`` messages may be written now: nobody is waiting for their turn, the
        unanswered ones leave room, and the socket holds at most the unsent-bytes limit."""
        return (
            not self._waiters
            and self._has_room(count)
            and self._transport.get_write_buffer_size() <= self._max_unsent
        )

    def _has_room(self, count: int) -> bool:
        busy = self._unanswered + self._granted
        return busy == 0 or busy + count <= self._max_unanswered

    async def wait_writable(self, count: int = 1) -> None:
        """Return once ``count`` messages may be written: after the requests that waited
        before this one, with room among the unanswered publishes, and with the socket
        holding at most the unsent-bytes limit. Raises ConnectionError when the connection
        goes away meanwhile; the caller bounds the wait (publish timeout). Publish the
        messages right after, in the same step."""
        if self._waiters or not self._has_room(count):
            turn = self._loop.create_future()
            self._waiters.append((turn, count))
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():  # granted, then given up
                    self._granted -= count
                    self._wake()
                raise
            self._granted -= count
        transport = self._transport
        while transport.get_write_buffer_size() > self._max_unsent:
            if not self.usable:
                raise ConnectionError("the channel is closed")
            await self._writer.drain()  # returns once the transport resumes writing
            if transport.get_write_buffer_size() > self._max_unsent:
                await asyncio.sleep(DRAIN_POLL_S)

    def publish(self, message: Outgoing, timestamp: int) -> asyncio.Future[Any]:
        """Write one message; the future resolves with the broker's ack (or fails: nack,
        channel or connection closed). Raises ConnectionError when it can't be written.
        Call ``wait_writable`` first: this writes whatever the socket already holds."""
        if not self.usable:
            raise ConnectionError("the channel is closed")
        frames = self._encoder.encode(message, timestamp)
        channel = self.channel
        channel.delivery_tag += 1
        # Closing the channel fails it (``_fail_pending``) instead of leaving it.
        confirmation: asyncio.Future[Any] = self._loop.create_future()
        channel.confirmations[channel.delivery_tag] = confirmation
        self._unanswered += 1
        confirmation.add_done_callback(self._answered)
        if not self._unsent:
            self._loop.call_soon(self._flush)
        self._unsent.append(frames)
        self._deadlines.append((self._loop.time() + self._timeout_s, confirmation))
        if self._sweeper is None:
            self._sweeper = self._loop.call_later(
                min(self._timeout_s, SWEEP_INTERVAL_S), self._sweep
            )
        return confirmation

    def _fail_pending(self, closed: asyncio.Future[Any]) -> None:
        """The channel closed: its pending confirms fail with the reason, as aiormq fails the
        futures of its store (retrieved here, so one nobody awaits any more is not logged)."""
        reason = (closed.exception() if not closed.cancelled() else None) or ConnectionError(
            "the channel is closed"
        )
        for confirmation in list(self.channel.confirmations.values()):
            if isinstance(confirmation, asyncio.Future) and not confirmation.done():
                confirmation.set_exception(reason)
                confirmation.exception()

    def _answered(self, _: asyncio.Future[Any]) -> None:
        self._unanswered -= 1
        if self._waiters:
            self._wake()

    def _wake(self) -> None:
        """Let waiting requests go, in arrival order, while the unanswered ones leave room."""
        waiters = self._waiters
        while waiters:
            turn, count = waiters[0]
            if turn.done():  # its request gave up waiting
                waiters.popleft()
                continue
            if not self._has_room(count):
                return
            waiters.popleft()
            self._granted += count
            turn.set_result(None)

    def _flush(self) -> None:
        unsent, self._unsent = self._unsent, []
        if not self._transport.is_closing():  # else the connection is gone: aiormq fails the
            self._transport.writelines(unsent)  # confirms of what could not be written

    def _sweep(self) -> None:
        """Cancel the confirms past their deadline; drop the answered ones from the queue."""
        now = self._loop.time()
        deadlines = self._deadlines
        while deadlines and (deadlines[0][0] <= now or deadlines[0][1].done()):
            _, confirmation = deadlines.popleft()
            if not confirmation.done():
                self.stalled = True
                confirmation.cancel()
            elif not confirmation.cancelled():
                self.stalled = False  # the broker answered a later publish
        self._sweeper = None
        if deadlines:
            wake = min(deadlines[0][0], now + SWEEP_INTERVAL_S)
            self._sweeper = self._loop.call_at(wake, self._sweep)
