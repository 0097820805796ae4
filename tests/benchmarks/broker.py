"""Broker bookkeeping for the benchmark: the sink queue, message counts and clean-up.

Every name the benchmark creates starts with ``bench-<random>`` so runs never touch another
user's exchanges or queues on the shared broker.
"""

from __future__ import annotations

import secrets

import aio_pika
from aiormq.exceptions import AMQPError
from pamqp.common import Arguments

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"


def unique_prefix(role: str) -> str:
    """A fresh exchange name for one benchmark target, e.g. ``bench-3f9a1c2e-gateway``."""
    return f"bench-{secrets.token_hex(4)}-{role}"


def queue_arguments(queue_type: str) -> Arguments:
    """Arguments that make a durable queue of ``queue_type`` (quorum or classic)."""
    return {"x-queue-type": queue_type}


async def declare_sink(
    url: str, exchange: str, queue: str, queue_type: str, *, declare_exchange: bool
) -> None:
    """Bind a durable queue to ``exchange`` with ``#`` so every published message is stored.

    With ``declare_exchange`` the topic exchange is declared too; otherwise it must exist
    (the gateway and the reference declare their own).
    """
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        if declare_exchange:
            await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        sink = await channel.declare_queue(
            queue, durable=True, arguments=queue_arguments(queue_type)
        )
        await sink.bind(exchange, routing_key="#")


async def message_count(url: str, queue: str) -> int:
    """Messages ready in ``queue`` (a passive declare; the queue must exist)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        count = declared.declaration_result.message_count
        return 0 if count is None else count


async def delete(url: str, *, exchanges: list[str], queues: list[str]) -> list[str]:
    """Delete queues, then exchanges; absent ones are fine. Returns what could not be deleted."""
    failed: list[str] = []
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for queue in queues:
            try:
                await channel.queue_delete(queue)
            except AMQPError as exc:
                failed.append(f"queue {queue}: {exc}")
                channel = await connection.channel()
        for exchange in exchanges:
            try:
                await channel.exchange_delete(exchange)
            except AMQPError as exc:
                failed.append(f"exchange {exchange}: {exc}")
                channel = await connection.channel()
    return failed


async def server_version(url: str) -> str:
    """The broker's product and version as it announces them, e.g. ``RabbitMQ 3.10.8``."""
    connection = await aio_pika.connect(url)
    async with connection:
        if connection.transport is None:
            return "broker (version unknown)"
        properties = connection.transport.connection.server_properties
        product = properties.get("product", "broker")
        return f"{product!s} {properties.get('version', '?')!s}"
