"""The ingress's one broker connection: publish with confirms, or say clearly that it can't.

Errors:
    BrokerUnavailable: the broker did not confirm (down, blocked by an alarm, nack, timeout).
    The request handler answers 503 with ``Retry-After``; the sender retries.

A single robust connection and one confirm-mode channel serve every request. The topology is
declared when the connection comes up and again after each reconnect; ``ready`` is true only
in between, and a publish while not ready fails at once instead of waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import datetime
from typing import Any, cast

import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from aiormq.channel import Channel as AiormqChannel
from aiormq.exceptions import AMQPError, ChannelInvalidStateError

from gateway.amqp_message import APP_ID, PERSISTENT, to_outgoing
from gateway.amqp_wire import Outgoing
from gateway.cloudevent import CloudEvent
from gateway.confirm_stream import ConfirmStream, StreamTracker, connect_robust
from gateway.logs import get_logger
from gateway.settings import AmqpSettings
from gateway.topology import Names, declare_ingress

log = get_logger(__name__)

_BROKER_ERRORS = (TimeoutError, AMQPError, ChannelInvalidStateError, ConnectionError, OSError)
_RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0)
RECONNECT_INTERVAL_S = 1.0
REJECTED_TYPE = "event-gateway.rejected"


class BrokerUnavailable(Exception):
    """The broker did not confirm the publish; nothing may be acknowledged to the sender."""


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
        self._closing = False
        self._streams = StreamTracker()
        self._stream: ConfirmStream | None = None

    @property
    def ready(self) -> bool:
        """Connected, with the topology declared."""
        return self._ready.is_set()

    async def wait_ready(self) -> None:
        await self._ready.wait()

    def start(self) -> None:
        """Connect in the background, retrying until the broker answers."""
        self._connector = asyncio.create_task(self._connect_forever(), name="amqp-connect")

    async def _connect_forever(self) -> None:
        attempt = 0
        while not self._closing:
            try:
                connection = await connect_robust(
                    self._amqp.url,
                    self._streams,
                    connect_timeout_s=10,
                    reconnect_interval=RECONNECT_INTERVAL_S,
                    client_properties={"connection_name": "event-gateway ingress"},
                )
            except _BROKER_ERRORS as exc:
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
            except _BROKER_ERRORS as exc:
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
        self._ready.set()
        log.info("broker connected", exchange=self._names.exchange)

    def _on_connection_lost(self, *_: Any) -> None:
        if self._ready.is_set():
            log.warning("broker connection lost")
        self._ready.clear()

    def _on_reconnected(self, *_: Any) -> None:
        self._redeclaring = asyncio.create_task(self._redeclare(), name="amqp-redeclare")

    async def _redeclare(self) -> None:
        try:
            await self._declare()
        except _BROKER_ERRORS as exc:
            log.error("re-declaring topology failed", error=str(exc) or type(exc).__name__)

    async def close(self) -> None:
        self._closing = True
        self._ready.clear()
        for task in (self._connector, self._redeclaring):
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

    async def _confirm(self, messages: list[Outgoing], received: datetime) -> None:
        """Write every message and wait for every confirm (``ConfirmStream``: the hot path).
        ``mandatory`` is off: the alternate exchange keeps unroutable events, and mandatory
        with a reused message id can hang a publish (aio-pika #689)."""
        timestamp = int(received.timestamp())
        try:
            stream = self._stream
            if stream is None or not stream.usable:
                async with asyncio.timeout(self._amqp.publish_timeout_s):
                    stream = await self._open_stream()
            # The stream cancels a confirm that is not in by the publish timeout.
            confirms = [stream.publish(message, timestamp) for message in messages]
        except TimeoutError:
            raise self._timed_out() from None
        except _BROKER_ERRORS as exc:
            raise BrokerUnavailable(f"broker error: {exc or type(exc).__name__}") from exc
        try:
            if len(confirms) == 1:
                await confirms[0]
            else:
                await asyncio.gather(*confirms)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this request is being cancelled, not the confirm
            raise self._timed_out() from None
        except aiormq.exceptions.DeliveryError as exc:
            raise BrokerUnavailable("the broker refused the message (nack)") from exc
        except Exception as exc:  # whatever closed the channel: not confirmed, so not accepted
            raise BrokerUnavailable(f"broker error: {exc or type(exc).__name__}") from exc

    def _timed_out(self) -> BrokerUnavailable:
        return BrokerUnavailable(f"no confirm within {self._amqp.publish_timeout_s:g}s")

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
        self._stream = ConfirmStream(
            channel,
            writer,
            timeout_s=self._amqp.publish_timeout_s,
            delivery_mode=PERSISTENT,
            app_id=APP_ID,
        )
        return self._stream
