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
from datetime import datetime
from typing import Any, cast

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from aiormq.channel import Channel as AiormqChannel
from aiormq.exceptions import AMQPError, ChannelInvalidStateError
from pamqp.commands import Basic

from gateway.amqp_message import APP_ID, PERSISTENT, to_body, to_properties
from gateway.cloudevent import CloudEvent
from gateway.logs import get_logger
from gateway.settings import AmqpSettings
from gateway.topology import Names, declare_ingress

log = get_logger(__name__)

_BROKER_ERRORS = (TimeoutError, AMQPError, ChannelInvalidStateError, ConnectionError, OSError)
_RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0)
RECONNECT_INTERVAL_S = 1.0


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
                connection = await aio_pika.connect_robust(
                    self._amqp.url,
                    timeout=10,
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
        exchange = self._exchange_or_raise(self._events)
        await self._confirm(
            exchange.name,
            [(to_body(e), to_properties(e, received), e["type"]) for e in events],
        )

    async def publish_rejected(self, record: bytes, source: str, received: datetime) -> None:
        """Keep a rejected request on ``<prefix>.rejected``, confirmed, or raise."""
        exchange = self._exchange_or_raise(self._rejected)
        properties = Basic.Properties(
            content_type="application/json",
            delivery_mode=PERSISTENT,
            timestamp=received,
            app_id=APP_ID,
            message_type="event-gateway.rejected",
        )
        await self._confirm(exchange.name, [(record, properties, source)])

    def _exchange_or_raise(self, exchange: AbstractExchange | None) -> AbstractExchange:
        if exchange is None or not self._ready.is_set():
            raise BrokerUnavailable("not connected to the broker")
        return exchange

    async def _confirm(
        self, exchange: str, messages: list[tuple[bytes, Basic.Properties, str]]
    ) -> None:
        """Publish straight on the channel underneath aio-pika (the hot path: no Message
        objects) and wait for every confirm. ``mandatory`` is off: the alternate exchange keeps
        unroutable events, and mandatory with a reused message id can hang a publish
        (aio-pika #689)."""
        assert self._channel is not None
        try:
            async with asyncio.timeout(self._amqp.publish_timeout_s):
                # The concrete aiormq channel: its basic_publish takes ``wait``.
                channel = cast(AiormqChannel, await self._channel.get_underlay_channel())
                confirms = [
                    channel.basic_publish(
                        body,
                        exchange=exchange,
                        routing_key=key,
                        properties=properties,
                        mandatory=False,
                        # Don't hold the channel lock until the frame is written: other
                        # requests' publishes can queue meanwhile. The confirm still
                        # proves the broker has the message.
                        wait=False,
                    )
                    for body, properties, key in messages
                ]
                if len(confirms) == 1:
                    await confirms[0]
                else:
                    await asyncio.gather(*confirms)
        except TimeoutError:
            raise BrokerUnavailable(
                f"no confirm within {self._amqp.publish_timeout_s:g}s"
            ) from None
        except aiormq.exceptions.DeliveryError as exc:
            raise BrokerUnavailable("the broker refused the message (nack)") from exc
        except _BROKER_ERRORS as exc:
            raise BrokerUnavailable(f"broker error: {exc or type(exc).__name__}") from exc
