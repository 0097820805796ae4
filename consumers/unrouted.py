"""``event-gateway unrouted``: events no queue was bound for, and publishing them again.

An ``unrouted list`` line is the event itself (contract §9); a body that is not a JSON object
is shown as ``{"message_id", "type", "malformed", "body" | "body_base64"}``.

``unrouted replay`` publishes each event to the exchange again with its routing key (after a
binding was added, it now reaches a queue). What is still unroutable goes back to
``<prefix>.unrouted`` through the exchange's alternate exchange, a new copy at the end of the
queue, and counts as failed. To know which, each copy carries the header
``x-gateway-replayed`` (the run's id), and for the run a private queue is bound to the
alternate exchange: the copies that come back through it are the failures.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage

from consumers.message_json import copied_properties, parsed_body, raw_body, text, undecodable
from consumers.replay import Copy, Plan, Planner

REPLAYED_HEADER = "x-gateway-replayed"


def unrouted_line(message: DeliveredMessage) -> dict[str, Any]:
    """What ``unrouted list`` prints for one message: the event."""
    properties = message.header.properties
    event, problem = parsed_body(message.body)
    if problem is None and not isinstance(event, dict):
        problem = "the body is not a JSON object"
    if problem is None:
        assert isinstance(event, dict)
        line: dict[str, Any] = event
    else:
        line = {
            "message_id": text(properties.message_id),
            "type": text(properties.message_type),
            "malformed": problem,
            **raw_body(message.body),
        }
    note = undecodable(properties)
    if note:
        line = {**line, **note}
    return line


def routing_key(message: DeliveredMessage) -> str:
    """The key it was first published with (the alternate exchange keeps it): its type."""
    return message.routing_key or text(message.header.properties.message_type) or ""


def unrouted_planner(exchange: str, run_id: str) -> Planner:
    """Each message back to ``exchange`` with its routing key, marked with ``run_id``."""

    def plan(message: DeliveredMessage) -> Plan:
        key = routing_key(message)
        properties = copied_properties(
            message.header.properties, add_headers={REPLAYED_HEADER: run_id}
        )
        return Plan(
            (Copy(exchange, key, message.body, properties),),
            moves=True,
            detail={"routing_key": key},
        )

    return plan


class ComebackCounter:
    """Counts this run's copies that the alternate exchange sends back to ``.unrouted``."""

    def __init__(self, connection: AbstractConnection, alternate_exchange: str) -> None:
        self._connection = connection
        self._alternate = alternate_exchange
        self.run_id = uuid.uuid4().hex
        self._channel: AbstractChannel | None = None
        self._queue = ""
        self._consumer: str | None = None
        self.count = 0

    async def start(self) -> None:
        self._channel = await self._connection.channel()
        # Exclusive: gone with the connection; not auto-delete, which the cancel would trigger.
        declared = await self._channel.queue_declare("", exclusive=True)
        assert declared.queue is not None
        self._queue = declared.queue
        await self._channel.queue_bind(self._queue, self._alternate, routing_key="")
        consumed = await self._channel.basic_consume(self._queue, self._seen, no_ack=True)
        self._consumer = consumed.consumer_tag

    async def _seen(self, message: DeliveredMessage) -> None:
        if text((message.header.properties.headers or {}).get(REPLAYED_HEADER)) == self.run_id:
            self.count += 1

    async def finish(self) -> int:
        """Every copy confirmed so far is counted; the private queue is deleted."""
        channel = self._channel
        if channel is None:
            return self.count
        if self._consumer is not None:
            await channel.basic_cancel(self._consumer)  # deliveries before it are counted
        while True:
            got = await channel.basic_get(self._queue, no_ack=True)
            if got.delivery_tag is None:  # get-empty
                break
            await self._seen(got)
        await channel.queue_delete(self._queue)
        await channel.close()
        return self.count
