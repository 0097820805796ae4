"""Test helpers for the real RabbitMQ: unique names, reading queues, cleaning up."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Iterable

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from aiormq.exceptions import AMQPError

from gateway.settings import WorkerSettings
from gateway.topology import BUILTIN_BINDINGS, Names, dlq_name, retry_queue_name

AMQP_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def unique_prefix() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def topology_names(
    prefix: str,
    backoff: Iterable[float] = (0.05, 0.1, 0.2, 0.5, 1, 5, 30, 120),
    jitters: Iterable[float] = (0.0, WorkerSettings().retry_jitter),
) -> tuple[list[str], list[str]]:
    """(exchanges, queues) the gateway and built-in workers may declare under ``prefix``
    (retry queues for each ``backoff`` delay under each of ``jitters``)."""
    names = Names.for_prefix(prefix)
    exchanges = [names.exchange, names.unrouted, names.rejected]
    queues = [names.unrouted, names.rejected]
    for short in BUILTIN_BINDINGS:
        queue = names.queue(short)
        queues += [queue, dlq_name(queue)]
        queues += sorted(
            {retry_queue_name(queue, d, jitter=j) for d in set(backoff) for j in set(jitters)}
        )
    return exchanges, queues


async def delete_everything(prefix: str, extra_queues: Iterable[str] = ()) -> None:
    """Delete the exchanges and queues a test declared under ``prefix``."""
    exchanges, queues = topology_names(prefix)
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        for queue in [*queues, *extra_queues]:
            channel = await connection.channel()
            with contextlib.suppress(AMQPError):
                await channel.queue_delete(queue)
        for exchange in exchanges:
            channel = await connection.channel()
            with contextlib.suppress(AMQPError):
                await channel.exchange_delete(exchange)


async def drain(
    channel: aio_pika.abc.AbstractChannel, queue: str, expected: int, timeout: float = 10.0
) -> list[AbstractIncomingMessage]:
    """Get messages from ``queue`` until ``expected`` arrived or the deadline passed."""
    declared = await channel.get_queue(queue, ensure=False)
    got: list[AbstractIncomingMessage] = []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(got) < expected and asyncio.get_running_loop().time() < deadline:
        message = await declared.get(no_ack=True, fail=False)
        if message is None:
            await asyncio.sleep(0.02)  # poll interval while waiting on the broker, not sync
            continue
        got.append(message)
    return got


async def message_count(channel: aio_pika.abc.AbstractChannel, queue: str) -> int:
    declared = await channel.declare_queue(queue, passive=True)
    assert declared.declaration_result.message_count is not None
    return declared.declaration_result.message_count
