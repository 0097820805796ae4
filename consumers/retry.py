"""Where a failed delivery goes next, and the message that takes it there. Pure; no I/O.

A message from the ingress carries no ``x-gateway-attempts`` header: its first delivery is
attempt 1. After a failed attempt ``n`` (``n < max_attempts``) the worker republishes the same
body and properties with ``x-gateway-attempts = n`` to the retry queue for
``retry_backoff_s[n-1]`` (the last value repeating), whose TTL sends it back to the work
queue; after attempt ``max_attempts``, or at once for an ``Unprocessable`` event, it goes to
``<queue>.dlq``. Both carry ``x-gateway-error``, the last error on one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aio_pika import DeliveryMode, Message
from aio_pika.abc import AbstractMessage

from gateway.topology import dlq_name, retry_queue_name

ATTEMPTS_HEADER = "x-gateway-attempts"
ERROR_HEADER = "x-gateway-error"
MAX_ERROR_CHARS = 500
# Headers the broker adds on dead-lettering and redelivery; a republished message starts clean.
_BROKER_HEADERS = ("x-death", "x-first-death-", "x-last-death-", "x-delivery-count")


@dataclass(frozen=True, slots=True)
class Route:
    """Where a failed message goes: ``queue`` (via the default exchange), and whether that is
    the dead-letter queue; ``attempts`` is the number of attempts made so far."""

    queue: str
    attempts: int
    dead_letter: bool


def attempts_made(headers: Mapping[str, Any] | None) -> int:
    """The attempts a message has already used up (0 for a fresh one)."""
    value = (headers or {}).get(ATTEMPTS_HEADER)
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return 0


def backoff_for(attempt: int, backoff_s: tuple[float, ...]) -> float:
    """The wait after failed attempt ``attempt`` (1-based); the last value repeats."""
    return backoff_s[min(attempt, len(backoff_s)) - 1]


def route_failure(
    queue: str,
    attempt: int,
    *,
    max_attempts: int,
    backoff_s: tuple[float, ...],
    retryable: bool = True,
) -> Route:
    """Where attempt number ``attempt`` (1-based) goes after it failed."""
    if retryable and attempt < max_attempts:
        return Route(retry_queue_name(queue, backoff_for(attempt, backoff_s)), attempt, False)
    return Route(dlq_name(queue), attempt, True)


def error_line(exc: BaseException) -> str:
    """``Type: message`` on one line, cut to ``MAX_ERROR_CHARS``."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = " ".join(text.split())
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 1] + "…"
    return text


def republished(message: AbstractMessage, *, attempts: int | None, error: str | None) -> Message:
    """A persistent copy of ``message`` (same body and properties) with the gateway headers
    set, or removed where ``None``. Broker-added headers, any expiration and ``user_id`` (the
    broker checks it against the publishing connection's user) are dropped."""
    headers: dict[str, Any] = {
        name: value
        for name, value in (message.headers or {}).items()
        if not name.startswith(_BROKER_HEADERS) and name not in (ATTEMPTS_HEADER, ERROR_HEADER)
    }
    if attempts is not None:
        headers[ATTEMPTS_HEADER] = attempts
    if error is not None:
        headers[ERROR_HEADER] = error
    return Message(
        message.body,
        headers=headers,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=DeliveryMode.PERSISTENT,
        priority=message.priority,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
    )
