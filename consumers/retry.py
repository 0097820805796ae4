"""Where a failed delivery goes next, and the message that takes it there. Pure; no I/O.

A message from the ingress carries no ``x-gateway-attempts`` header: its first delivery is
attempt 1. After a failed attempt ``n`` (``n < max_attempts``) the worker republishes the same
body and properties with ``x-gateway-attempts = n`` to the retry queue for
``retry_backoff_s[n-1]`` (the last value repeating), whose TTL sends it back to the work
queue; after attempt ``max_attempts``, or at once for an ``Unprocessable`` event, it goes to
``<queue>.dlq``. Both carry ``x-gateway-error``, the last error on one line.

Errors:
    InvalidAttempts: the ``x-gateway-attempts`` header is there but is no attempt count (the
    worker dead-letters such a message: no count can be trusted for it).

A retry copy also carries a per-message ``expiration``: its backoff with ``retry_jitter``
applied either way (``jittered``), so messages that failed together do not all come back
together. The retry queue's TTL is the longest of those waits, backoff * (1 + jitter)
(``gateway.topology.retry_ttl_ms``), so it never cuts the + half short.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aio_pika import DeliveryMode, Message
from aio_pika.abc import AbstractMessage

from consumers.event import Unprocessable
from gateway.topology import dlq_name, retry_queue_name

ATTEMPTS_HEADER = "x-gateway-attempts"
ERROR_HEADER = "x-gateway-error"
MAX_ERROR_CHARS = 500
# Headers the broker adds on dead-lettering and redelivery; a republished message starts clean.
_BROKER_HEADERS = ("x-death", "x-first-death-", "x-last-death-", "x-delivery-count")
# More attempts than any configuration makes; a longer count is junk, not a count (and int()
# of a 5,000-digit string raises).
MAX_ATTEMPTS_DIGITS = 6


class InvalidAttempts(Unprocessable):
    """``x-gateway-attempts`` holds something other than a count of attempts."""


@dataclass(frozen=True, slots=True)
class Route:
    """Where a failed message goes: ``queue`` (via the default exchange), and whether that is
    the dead-letter queue; ``attempts`` is the number of attempts made so far."""

    queue: str
    attempts: int
    dead_letter: bool


def read_attempts(headers: Mapping[str, Any] | None) -> int:
    """The attempts a message has already used up: 0 without the header; raises
    InvalidAttempts when the header is not a whole number from 0 to 999,999 (an int, or its
    ASCII digits as text or bytes)."""
    if not headers or ATTEMPTS_HEADER not in headers:
        return 0
    value = headers[ATTEMPTS_HEADER]
    count = _count(value)
    if count is None:
        raise InvalidAttempts(f"{ATTEMPTS_HEADER} is not an attempt count: {_shown(value)}")
    return count


def attempts_made(headers: Mapping[str, Any] | None) -> int:
    """Like ``read_attempts``, but junk counts as 0: for tools that show a message and must
    not fail on one (``dlq list``)."""
    try:
        return read_attempts(headers)
    except InvalidAttempts:
        return 0


def _count(value: Any) -> int | None:
    if isinstance(value, bytes | bytearray):
        text = bytes(value)
    elif isinstance(value, str):
        text = value.encode("utf-8", "replace")
    elif isinstance(value, int) and not isinstance(value, bool):
        return value if 0 <= value < 10**MAX_ATTEMPTS_DIGITS else None
    else:
        return None
    # bytes.isdigit() is ASCII-only: "²" or Arabic-Indic digits are not a count.
    if 0 < len(text) <= MAX_ATTEMPTS_DIGITS and text.isdigit():
        return int(text)
    return None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}... ({len(text)} characters)"


def backoff_for(attempt: int, backoff_s: tuple[float, ...]) -> float:
    """The wait after failed attempt ``attempt`` (1-based); the last value repeats."""
    return backoff_s[min(attempt, len(backoff_s)) - 1]


def jittered(
    delay_s: float, jitter: float, uniform: Callable[[float, float], float] = random.uniform
) -> float:
    """``delay_s`` moved by up to ``jitter`` of itself, either way (``jitter`` in [0, 1])."""
    if jitter <= 0:
        return delay_s
    return delay_s * (1.0 + uniform(-jitter, jitter))


def route_failure(
    queue: str,
    attempt: int,
    *,
    max_attempts: int,
    backoff_s: tuple[float, ...],
    jitter: float,
    retryable: bool = True,
) -> Route:
    """Where attempt number ``attempt`` (1-based) goes after it failed (``jitter`` is
    ``retry_jitter``: it names the retry queue)."""
    if retryable and attempt < max_attempts:
        delay = backoff_for(attempt, backoff_s)
        return Route(retry_queue_name(queue, delay, jitter=jitter), attempt, False)
    return Route(dlq_name(queue), attempt, True)


def error_line(exc: BaseException) -> str:
    """``Type: message`` on one line, cut to ``MAX_ERROR_CHARS``."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    text = " ".join(text.split())
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 1] + "…"
    return text


def republished(
    message: AbstractMessage,
    *,
    attempts: int | None,
    error: str | None,
    expires_s: float | None = None,
) -> Message:
    """A persistent copy of ``message`` (same body and properties) with the gateway headers
    set, or removed where ``None``. Broker-added headers, any expiration (``expires_s`` sets
    a new one) and ``user_id`` (the broker checks it against the publishing connection's
    user) are dropped."""
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
        expiration=expires_s,
        priority=message.priority,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        message_id=message.message_id,
        timestamp=message.timestamp,
        type=message.type,
        app_id=message.app_id,
    )
