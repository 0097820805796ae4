"""The ingress's one broker connection: publish with confirms, or say clearly that it can't.

Errors:
    BrokerUnavailable (``gateway.broker_errors``): the broker did not confirm (down, blocked by
    an alarm, nack, timeout). The request handler answers 503 with ``Retry-After``.

One robust connection (to one node of ``[amqp] url``'s list, moving to another when it goes
away: ``gateway.broker_connect``) and one confirm-mode channel serve every request. The topology
is declared when the connection comes up and again after each reconnect; ``ready`` is true only
in between, and not while the broker blocks publishers. A publish while not ready fails at once.

Two publish paths sit behind ``publish_events``/``publish_rejected``: the fast path
(``ConfirmStream``, ``[amqp] publisher = "fast"``, the default) and the standard path (plain
aio-pika, ``"standard"``). The fast path relies on aiormq internals, so it is fenced: it is
checked each time the connection comes up (``gateway.fast_path_check``), and a failed check or
any unexpected error on it switches this process to the standard path for good (an error log
line, ``event_gateway_publisher_fallbacks_total``), never a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import datetime
from typing import Any, cast

from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from aiormq.channel import Channel as AiormqChannel
from aiormq.exceptions import DeliveryError

from gateway.amqp_message import APP_ID, PERSISTENT, to_outgoing
from gateway.amqp_wire import Outgoing
from gateway.broker_connect import accepts_publishes, connect_robust, connected_node
from gateway.broker_errors import BROKER_ERRORS, BrokerUnavailable
from gateway.cloudevent import CloudEvent
from gateway.confirm_stream import ConfirmStream, StreamTracker
from gateway.fast_path_check import FastPathUnsupported, check_internals, round_trip
from gateway.logs import get_logger
from gateway.settings import AmqpSettings
from gateway.standard_publisher import StandardPublisher
from gateway.topology import Names, declare_ingress

__all__ = ["BrokerUnavailable", "Publisher"]

log = get_logger(__name__)

_RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0)
RECONNECT_INTERVAL_S = 1.0
REJECTED_TYPE = "event-gateway.rejected"
DEFAULT_FRAME_MAX = 131072  # RabbitMQ's, until a connection has negotiated one
CHUNK = 256  # messages of one request written before the socket's fill level is checked again


class Publisher:
    """Publishes CloudEvents and rejected-request records with publisher confirms."""

    def __init__(self, amqp: AmqpSettings) -> None:
        self._amqp = amqp
        self._names = Names.for_prefix(amqp.exchange)
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._events: AbstractExchange | None = None
        self._rejected: AbstractExchange | None = None
        self._ready = asyncio.Event()
        self._connector: asyncio.Task[None] | None = None
        self._redeclaring: asyncio.Task[None] | None = None
        self._prober: asyncio.Task[None] | None = None
        self._closing = False
        self._streams = StreamTracker()
        self._stream: ConfirmStream | None = None
        self._fast = amqp.publisher != "standard"
        self._standard: StandardPublisher | None = None
        self._standard_lock = asyncio.Lock()
        self._node: str | None = None  # the node of the last connection that came up
        self.fallbacks = 0  # times the fast path was given up (0 or 1: it is for good)

    @property
    def ready(self) -> bool:
        """Connected, with the topology declared and the publish path checked, not blocked by
        the broker (memory or disk alarm), and the fast path's confirms not stalled (a stalled
        stream is probed in the background until a confirm comes back)."""
        connection = self._connection
        if not (self._ready.is_set() and connection is not None and accepts_publishes(connection)):
            return False
        stream = self._stream
        if self._fast and stream is not None and stream.stalled:
            self._probe(stream)
            return False
        return True

    def _probe(self, stream: ConfirmStream) -> None:
        """One probe at a time through a stalled stream; its confirm clears ``stalled``."""
        if self._prober is not None and not self._prober.done():
            return
        self._prober = asyncio.create_task(self._probe_once(stream), name="amqp-probe")

    async def _probe_once(self, stream: ConfirmStream) -> None:
        with contextlib.suppress(FastPathUnsupported):
            await round_trip(stream, f"{self._names.exchange}.self-check", self._timeout_s)

    @property
    def publisher(self) -> str:
        """The publish path in use: ``fast`` or ``standard``."""
        return "fast" if self._fast else "standard"

    @property
    def node(self) -> str | None:
        """``host:port`` of the broker node this publisher is connected to (or trying next)."""
        return None if self._connection is None else connected_node(self._connection)

    @property
    def frame_max(self) -> int:
        """The connection's negotiated frame size (0: no limit)."""
        transport = getattr(self._connection, "transport", None)
        if transport is None:
            return DEFAULT_FRAME_MAX
        tune = getattr(transport.connection, "connection_tune", None)
        return DEFAULT_FRAME_MAX if tune is None else int(tune.frame_max)

    async def wait_ready(self) -> None:
        await self._ready.wait()

    def start(self) -> None:
        """Connect in the background, retrying until a broker node answers."""
        self._connector = asyncio.create_task(self._connect_forever(), name="amqp-connect")

    async def _connect_forever(self) -> None:
        attempt = 0
        while not self._closing:
            try:
                connection = await connect_robust(
                    self._amqp.urls,
                    connect_timeout_s=10,
                    transport_factory=self._streams,
                    reconnect_interval=RECONNECT_INTERVAL_S,
                    client_properties={"connection_name": "event-gateway ingress"},
                )
            except BROKER_ERRORS as exc:
                delay = _RECONNECT_DELAYS[min(attempt, len(_RECONNECT_DELAYS) - 1)]
                if attempt == 0 or attempt % 20 == 0:
                    log.warning(
                        "broker unreachable, retrying", error=str(exc) or type(exc).__name__
                    )
                attempt += 1
                await asyncio.sleep(delay)
                continue
            self._connection = connection
            connection.close_callbacks.add(self._on_connection_lost)
            connection.reconnect_callbacks.add(self._on_reconnected)
            try:
                await self._declare()
            except BROKER_ERRORS as exc:
                # Robust connection retries by itself; readiness follows _on_reconnected.
                log.error("declaring topology failed", error=str(exc) or type(exc).__name__)
            return

    async def _declare(self) -> None:
        assert self._connection is not None
        if self._channel is None:
            # One robust channel for the process; the connection restores it on reconnect.
            self._channel = await self._connection.channel(publisher_confirms=True)
        self._events = await declare_ingress(self._channel, self._amqp)
        self._rejected = await self._channel.get_exchange(self._names.rejected, ensure=False)
        await self._prepare_path()
        self._ready.set()
        self._node = self.node
        log.info(
            "broker connected",
            exchange=self._names.exchange,
            node=self._node,
            publisher=self.publisher,
        )

    async def _prepare_path(self) -> None:
        """Check the fast path on the new connection (falling back when it fails), or open
        the standard path's channel."""
        while self._fast and not self._closing:
            try:
                stream = await self._open_stream()
                await round_trip(stream, f"{self._names.exchange}.self-check", self._timeout_s)
                return
            except FastPathUnsupported as exc:
                if not await self._broker_answers():
                    # A blocked or stalled broker, not the fast path: check again later.
                    log.warning("broker not answering; checking the publish path again")
                    await asyncio.sleep(RECONNECT_INTERVAL_S)
                    continue
                self._fall_back(exc)
            except BROKER_ERRORS:
                raise
            except Exception as exc:  # the fence: any surprise of the fast path
                self._fall_back(exc)
        if not self._closing:
            async with asyncio.timeout(self._timeout_s):
                await self._standard_publisher()

    async def _broker_answers(self) -> bool:
        """Whether the broker answers an ordinary request (a passive declare) in time."""
        assert self._connection is not None
        assert self._channel is not None
        if not accepts_publishes(self._connection):
            return False
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._channel.get_exchange(self._names.exchange, ensure=True)
        except BROKER_ERRORS:
            return False
        return True

    def _on_connection_lost(self, *_: Any) -> None:
        if self._ready.is_set():
            log.warning("broker connection lost", node=self._node)
        self._ready.clear()

    def _on_reconnected(self, *_: Any) -> None:
        self._redeclaring = asyncio.create_task(self._redeclare(), name="amqp-redeclare")

    async def _redeclare(self) -> None:
        try:
            await self._declare()
        except BROKER_ERRORS as exc:
            log.error("re-declaring topology failed", error=str(exc) or type(exc).__name__)

    async def close(self) -> None:
        self._closing = True
        self._ready.clear()
        for task in (self._connector, self._redeclaring, self._prober):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._connection is not None:
            await self._connection.close()

    async def publish_events(self, events: list[CloudEvent], received: datetime) -> None:
        """Publish every event and wait for every confirm, or raise BrokerUnavailable."""
        exchange = self._exchange_or_raise(self._events).name
        await self._confirm([to_outgoing(exchange, event) for event in events], received)

    async def publish_rejected(self, record: bytes, source: str, received: datetime) -> None:
        """Keep a rejected request on ``<prefix>.rejected``, confirmed, or raise."""
        exchange = self._exchange_or_raise(self._rejected).name
        message = Outgoing(
            exchange, source, record, "application/json", uuid.uuid4().hex, REJECTED_TYPE
        )
        await self._confirm([message], received)

    def _exchange_or_raise(self, exchange: AbstractExchange | None) -> AbstractExchange:
        if exchange is None or not self._ready.is_set():
            raise BrokerUnavailable("not connected to the broker")
        return exchange

    @property
    def _timeout_s(self) -> float:
        return self._amqp.publish_timeout_s

    async def _confirm(self, messages: list[Outgoing], received: datetime) -> None:
        """Publish on the path in use; an unexpected error of the fast path falls back to the
        standard path, which then publishes these messages (a duplicate at worst, never a
        500: consumers de-duplicate by id)."""
        assert self._connection is not None
        if not accepts_publishes(self._connection):
            raise BrokerUnavailable("the broker blocks publishers (memory or disk alarm)")
        timestamp = int(received.timestamp())
        if self._fast:
            try:
                return await self._confirm_fast(messages, timestamp)
            except (BrokerUnavailable, asyncio.CancelledError):
                raise
            except Exception as exc:  # the fence: whatever else the fast path raised
                self._fall_back(exc)
        standard = self._standard
        if standard is None:
            try:
                async with asyncio.timeout(self._timeout_s):
                    standard = await self._standard_publisher()
            except BROKER_ERRORS as exc:
                raise BrokerUnavailable(f"broker error: {exc or type(exc).__name__}") from exc
        await standard.confirm(messages, timestamp)

    def _fall_back(self, error: BaseException) -> None:
        """Give up the fast path for the life of this process."""
        if not self._fast:
            return
        self._fast = False
        self._stream = None
        self.fallbacks += 1
        log.error(
            "fast publish path failed; using the standard aio-pika path until restart",
            error=repr(error),
        )

    async def _standard_publisher(self) -> StandardPublisher:
        """The standard path, on a robust confirm channel of its own (the fast path's channel
        may hold state the failure left behind)."""
        async with self._standard_lock:
            if self._standard is None:
                assert self._connection is not None
                channel = await self._connection.channel(publisher_confirms=True)
                self._standard = StandardPublisher(channel, timeout_s=self._timeout_s)
            return self._standard

    async def _confirm_fast(self, messages: list[Outgoing], timestamp: int) -> None:
        """Write every message and wait for every confirm (``ConfirmStream``: the hot path).
        ``mandatory`` is off: the alternate exchange keeps unroutable events, and mandatory
        with a reused message id can hang a publish (aio-pika #689).

        A big batch is written ``CHUNK`` messages at a time, each chunk when its turn comes
        (``ConfirmStream.wait_writable``: few enough unanswered publishes, a socket that
        drains): a burst of big batches then makes other requests wait their turn (within the
        publish timeout), not fail, nor queue behind every message of the burst."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self._timeout_s
        confirms: list[asyncio.Future[Any]] = []
        try:
            for first in range(0, len(messages), CHUNK):
                chunk = messages[first : first + CHUNK]
                stream = self._stream
                if stream is None or not stream.usable or not stream.writable(len(chunk)):
                    async with asyncio.timeout_at(deadline):  # a timer only when waiting
                        if stream is None or not stream.usable:
                            stream = await self._open_stream()
                        await stream.wait_writable(len(chunk))
                # The stream cancels a confirm that is not in by the publish timeout.
                confirms += [stream.publish(message, timestamp) for message in chunk]
        except TimeoutError:
            _abandon(confirms)
            raise self._timed_out() from None
        except BROKER_ERRORS as exc:
            _abandon(confirms)
            raise BrokerUnavailable(f"broker error: {exc or type(exc).__name__}") from exc
        waited = loop.time() - started
        try:
            if waited > 0.001:  # the stream's deadline starts now: keep the request's in bound
                async with asyncio.timeout(self._timeout_s - waited):
                    await asyncio.gather(*confirms)
            elif len(confirms) == 1:
                await confirms[0]
            else:
                await asyncio.gather(*confirms)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this request is being cancelled, not the confirm
            raise self._timed_out() from None
        except TimeoutError:
            raise self._timed_out() from None
        except DeliveryError as exc:
            raise BrokerUnavailable("the broker refused the message (nack)") from exc
        except BROKER_ERRORS as exc:  # whatever closed the channel: not confirmed, not accepted
            raise BrokerUnavailable(f"broker error: {exc or type(exc).__name__}") from exc

    def _timed_out(self) -> BrokerUnavailable:
        return BrokerUnavailable(f"no confirm within {self._timeout_s:g}s")

    async def _open_stream(self) -> ConfirmStream:
        """The publishing stream of the current channel (after a reconnect: the new one)."""
        assert self._channel is not None
        # The concrete aiormq channel: waits while the robust channel is being reopened.
        channel = cast(AiormqChannel, await self._channel.get_underlay_channel())
        current = self._stream
        if current is not None and current.channel is channel and current.usable:
            # Another request opened it while this one waited. One stream per channel: two
            # would each batch their writes and could put frames out of delivery-tag order.
            return current
        writer = self._streams.writer
        if writer is None or writer.is_closing():
            raise ConnectionError("no open connection")
        check_internals(channel, writer)
        self._stream = ConfirmStream(
            channel,
            writer,
            timeout_s=self._timeout_s,
            delivery_mode=PERSISTENT,
            app_id=APP_ID,
        )
        return self._stream


def _abandon(confirms: list[asyncio.Future[Any]]) -> None:
    """Confirms of a request that failed before waiting on them: retrieve their outcome when it
    comes, so a failed one is not reported as never retrieved."""
    for confirm in confirms:
        confirm.add_done_callback(lambda done: done.cancelled() or done.exception())
