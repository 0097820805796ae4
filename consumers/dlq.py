"""Look into a worker's dead-letter queue and move its messages back (``event-gateway dlq``).

Errors:
    NoSuchQueue: the dead-letter queue (or, for replay, the work queue) does not exist.

``list`` takes every message with ``basic.get`` without acking, then hands them all back
with one ``nack(multiple, requeue)``: while listing, each message is held once, so it is
reported once, and afterwards the queue holds the same messages in the same order.
``replay`` publishes each one (with confirm) to the work queue with the attempt count reset,
then acks it in the DLQ; it moves at most as many as the DLQ held when it started, so a
message that fails again and comes back is not replayed in a loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import ChannelNotFoundEntity

from consumers.retry import ERROR_HEADER, attempts_made, republished
from gateway.settings import AmqpSettings
from gateway.topology import Names, dlq_name


class NoSuchQueue(Exception):
    """The queue named on the command line does not exist on the broker."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """What ``dlq list`` shows of one message."""

    id: str | None
    type: str | None
    attempts: int
    error: str | None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "attempts": self.attempts, "error": self.error}


def work_queue(amqp: AmqpSettings, name: str) -> str:
    """The full work queue from ``roaming``, ``events.roaming`` or ``events.roaming.dlq``."""
    name = name.removesuffix(".dlq")
    return Names.for_prefix(amqp.exchange).queue(name)


async def list_dead_letters(amqp: AmqpSettings, queue: str) -> list[DeadLetter]:
    """Every message in ``<queue>.dlq``, oldest first; the queue is left as it was."""
    async with _channel(amqp) as channel:
        dlq = await _existing(channel, dlq_name(queue))
        held: list[AbstractIncomingMessage] = []
        try:
            while (message := await dlq.get(no_ack=False, fail=False)) is not None:
                held.append(message)
        finally:
            if held:
                await held[-1].nack(multiple=True, requeue=True)
        return [_describe(message) for message in held]


async def replay_dead_letters(amqp: AmqpSettings, queue: str) -> int:
    """Move the messages of ``<queue>.dlq`` back to ``queue``; returns how many moved."""
    async with _channel(amqp) as channel:
        dlq = await _existing(channel, dlq_name(queue))
        await _existing(channel, queue)
        waiting = dlq.declaration_result.message_count or 0
        moved = 0
        while moved < waiting:
            message = await dlq.get(no_ack=False, fail=False)
            if message is None:
                break
            try:
                await channel.default_exchange.publish(
                    republished(message, attempts=None, error=None),
                    routing_key=queue,
                    mandatory=True,
                    timeout=amqp.publish_timeout_s,
                )
            except BaseException:
                await message.nack(requeue=True)
                raise
            await message.ack()
            moved += 1
        return moved


@asynccontextmanager
async def _channel(amqp: AmqpSettings) -> AsyncIterator[AbstractChannel]:
    connection = await aio_pika.connect(amqp.url)
    try:
        yield await connection.channel(publisher_confirms=True, on_return_raises=True)
    finally:
        await connection.close()


async def _existing(channel: AbstractChannel, name: str) -> AbstractQueue:
    try:
        return await channel.declare_queue(name, passive=True)
    except ChannelNotFoundEntity:
        raise NoSuchQueue(f"queue {name!r} does not exist") from None


def _describe(message: AbstractIncomingMessage) -> DeadLetter:
    headers = message.headers or {}
    event_id, event_type = message.message_id, message.type
    if event_id is None or event_type is None:
        try:
            body = orjson.loads(message.body)
        except orjson.JSONDecodeError:
            body = None
        if isinstance(body, dict):
            event_id = event_id or _text(body.get("id"))
            event_type = event_type or _text(body.get("type"))
    error = headers.get(ERROR_HEADER)
    if isinstance(error, bytes):
        error = error.decode("utf-8", "replace")
    return DeadLetter(
        id=event_id,
        type=event_type,
        attempts=attempts_made(headers),
        error=error if isinstance(error, str) else None,
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
