"""``event-gateway dlq``: what a worker's dead-letter queue holds, and moving it back.

A ``dlq list`` line is ``{"message_id", "type", "x-gateway-error", "x-gateway-attempts",
"event"}`` (contract §9); a body that is not JSON is shown as ``body``/``body_base64`` with
``event`` null. ``dlq replay`` moves each message to its work queue (through the default
exchange, ``mandatory``: a work queue deleted meanwhile fails the move instead of losing the
message) with the attempt count and the last error removed, so the worker starts afresh.
"""

from __future__ import annotations

from typing import Any

from aiormq.abc import DeliveredMessage

from consumers.message_json import (
    copied_properties,
    parsed_body,
    raw_body,
    text,
    undecodable,
)
from consumers.replay import Copy, Plan, Planner
from consumers.retry import ATTEMPTS_HEADER, ERROR_HEADER, attempts_made
from gateway.settings import AmqpSettings
from gateway.topology import Names, dlq_name

__all__ = ["dlq_line", "dlq_name", "dlq_planner", "work_queue"]


def work_queue(amqp: AmqpSettings, name: str) -> str:
    """The full work queue from ``roaming``, ``events.roaming`` or ``events.roaming.dlq``."""
    name = name.removesuffix(".dlq")
    return Names.for_prefix(amqp.exchange).queue(name)


def dlq_line(message: DeliveredMessage) -> dict[str, Any]:
    """What ``dlq list`` prints for one dead letter."""
    properties = message.header.properties
    headers = properties.headers or {}
    event, problem = parsed_body(message.body)
    line: dict[str, Any] = {
        "message_id": text(properties.message_id),
        "type": text(properties.message_type),
        ERROR_HEADER: text(headers.get(ERROR_HEADER)),
        ATTEMPTS_HEADER: attempts_made(headers),
        "event": event,
    }
    if problem is not None:
        line.update(malformed=problem, **raw_body(message.body))
    line.update(undecodable(properties))
    return line


def dlq_planner(queue: str) -> Planner:
    """Each dead letter back to ``queue``, attempts and error cleared."""

    def plan(message: DeliveredMessage) -> Plan:
        properties = copied_properties(
            message.header.properties, drop_headers=(ATTEMPTS_HEADER, ERROR_HEADER)
        )
        copy = Copy("", queue, message.body, properties, mandatory=True)
        return Plan((copy,), moves=True, detail={"to": queue})

    return plan
