"""The broker connection of the queue tools (``rejected``, ``unrouted``, ``dlq``).

Errors:
    BrokerUnreachable: no node of ``[amqp] url`` accepted a connection.
    NoSuchQueue: a queue named on the command line does not exist.

The tools talk to aiormq directly: a tool moves thousands of messages and aio-pika's wrapper
objects cost more per message than the move itself. The connection reads frames through
``consumers.lenient_frames``, so a message whose headers pamqp cannot decode is listed and
moved instead of closing the connection.
"""

from __future__ import annotations

import asyncio

import aiormq
from aiormq.abc import AbstractChannel, AbstractConnection
from aiormq.exceptions import AMQPError, ChannelNotFoundEntity

from consumers.lenient_frames import LenientTransportFactory
from gateway.settings import AmqpSettings

CONNECT_TIMEOUT_S = 10.0


class BrokerUnreachable(Exception):
    """No node of the configured cluster accepted a connection."""


class NoSuchQueue(Exception):
    """The queue named on the command line does not exist on the broker."""


async def connect(amqp: AmqpSettings) -> AbstractConnection:
    """A connection to the first node of ``amqp.urls`` that answers."""
    errors: list[str] = []
    for url in amqp.urls:
        try:
            connection = aiormq.Connection(
                url,
                transport_factory=LenientTransportFactory(),
                client_properties={"connection_name": "event-gateway queue tool"},
            )
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await connection.connect()
        except (AMQPError, OSError, TimeoutError) as exc:
            errors.append(f"{exc or type(exc).__name__}")
            continue
        return connection
    raise BrokerUnreachable(f"cannot reach RabbitMQ: {'; '.join(errors)}")


async def ready_messages(connection: AbstractConnection, queue: str) -> int:
    """Messages ready in ``queue`` now (a passive declare on a channel of its own, since a
    failed one closes its channel); ``NoSuchQueue`` when it does not exist."""
    channel: AbstractChannel = await connection.channel()
    try:
        declared = await channel.queue_declare(queue, passive=True)
    except ChannelNotFoundEntity:
        raise NoSuchQueue(f"queue {queue!r} does not exist") from None
    await channel.close()
    return declared.message_count or 0
