"""Names and declarations of every exchange and queue the gateway and its workers use.

Shared by the ingress, the workers and the ``topology`` command, so one place decides the
shape of the broker. Declarations are idempotent: running them again with the same settings
changes nothing. Importing this module pulls in no web stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange
from aiormq.exceptions import AMQPError, ChannelPreconditionFailed

from gateway.settings import AmqpSettings, WorkerSettings

# Every event version (``.*.``): CAMARA versions events apart from the API, and a new ``v1``
# type must reach its worker, not ``.unrouted`` (contract §5).
_ROAMING_LEGACY = "org.camaraproject.device-status.*"
BUILTIN_BINDINGS: dict[str, tuple[str, ...]] = {
    "roaming": (
        "org.camaraproject.device-roaming-status-subscriptions.*.*",
        "org.camaraproject.roaming-status-subscriptions.*.*",
        f"{_ROAMING_LEGACY}.roaming-status",
        f"{_ROAMING_LEGACY}.roaming-on",
        f"{_ROAMING_LEGACY}.roaming-off",
        f"{_ROAMING_LEGACY}.roaming-change-country",
        f"{_ROAMING_LEGACY}.subscription-ends",
    ),
    "reachability": (
        "org.camaraproject.device-reachability-status-subscriptions.*.*",
        f"{_ROAMING_LEGACY}.connectivity-data",
        f"{_ROAMING_LEGACY}.connectivity-sms",
        f"{_ROAMING_LEGACY}.connectivity-disconnected",
        f"{_ROAMING_LEGACY}.subscription-ends",
    ),
    "sms": ("notify.sms.*",),
}
# A quorum queue redelivers a message that kills its consumer forever unless capped
# (RabbitMQ 3.10 sets no default). Past this many deliveries the broker itself moves it
# to <queue>.dlq; ordinary handler failures never get near it, the worker retries them.
POISON_DELIVERY_LIMIT = 50


@dataclass(frozen=True, slots=True)
class Names:
    """Every name derived from the ``[amqp] exchange`` prefix."""

    exchange: str
    unrouted: str
    rejected: str

    @classmethod
    def for_prefix(cls, prefix: str) -> Names:
        return cls(exchange=prefix, unrouted=f"{prefix}.unrouted", rejected=f"{prefix}.rejected")

    def queue(self, short: str) -> str:
        """The full name of a queue, e.g. ``roaming`` -> ``events.roaming``."""
        return short if short.startswith(f"{self.exchange}.") else f"{self.exchange}.{short}"


def dlq_name(queue: str) -> str:
    return f"{queue}.dlq"


def retry_ttl_ms(delay_s: float, jitter: float) -> int:
    """The TTL of the retry queue for ``delay_s``: the longest wait it must hold, the backoff
    at the + end of ``retry_jitter`` (each copy's own, shorter, expiration ends it earlier)."""
    return round(delay_s * (1.0 + max(jitter, 0.0)) * 1000)


def retry_queue_name(queue: str, delay_s: float, *, jitter: float) -> str:
    """``<queue>.retry.<delay>`` when the queue's TTL is the backoff itself (no jitter), else
    ``<queue>.retry.<delay>.ttl<TTL>`` (e.g. ``events.roaming.retry.5s.ttl5500ms``).

    The name carries the TTL because RabbitMQ refuses to redeclare a queue with another
    ``x-message-ttl``: other settings get new queues, and the old ones dead-letter what they
    still hold back to ``queue`` and drain by themselves.
    """
    ttl_ms = retry_ttl_ms(delay_s, jitter)
    name = f"{queue}.retry.{_duration(delay_s)}"
    return name if ttl_ms == round(delay_s * 1000) else f"{name}.ttl{_duration(ttl_ms / 1000)}"


def retry_queue_names(queue: str, workers: WorkerSettings) -> list[str]:
    """Every retry queue of ``queue`` under these settings, shortest delay first."""
    return [
        retry_queue_name(queue, delay, jitter=workers.retry_jitter)
        for delay in sorted(set(workers.retry_backoff_s))
    ]


def _duration(seconds: float) -> str:
    whole = float(seconds).is_integer()
    return f"{int(seconds)}s" if whole else f"{round(seconds * 1000)}ms"


def queue_arguments(queue_type: str, **extra: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {"x-queue-type": queue_type}
    arguments.update(extra)
    return arguments


def _at_least_once_dead_lettering(queue_type: str, target: str) -> dict[str, Any]:
    """Dead-letter into ``target`` via the default exchange; at-least-once on quorum queues."""
    arguments: dict[str, Any] = {
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": target,
    }
    if queue_type == "quorum":
        # Without these two, quorum dead-lettering is at-most-once (RabbitMQ 3.10 docs).
        arguments["x-dead-letter-strategy"] = "at-least-once"
        arguments["x-overflow"] = "reject-publish"
    return arguments


def retry_queue_arguments(
    queue_type: str, queue: str, delay_s: float, jitter: float
) -> dict[str, Any]:
    """A retry queue of ``queue``: its TTL, then back into ``queue``."""
    return queue_arguments(
        queue_type,
        **{"x-message-ttl": retry_ttl_ms(delay_s, jitter)},
        **_at_least_once_dead_lettering(queue_type, queue),
    )


class StoreArgumentsDiffer(AMQPError):
    """``.rejected`` or ``.unrouted`` exists with other arguments (made before its bounds, or
    with other ``[amqp]`` settings): RabbitMQ refuses to change them in place."""


def rejected_arguments(amqp: AmqpSettings) -> dict[str, Any]:
    """The newest records up to ``rejected_max_bytes``, each for ``rejected_ttl_s`` at most;
    the oldest are dropped to make room (contract §7)."""
    return queue_arguments(
        amqp.queue_type,
        **{
            "x-max-length-bytes": amqp.rejected_max_bytes,
            "x-message-ttl": amqp.rejected_ttl_s * 1000,
            "x-overflow": "drop-head",
        },
    )


def unrouted_arguments(amqp: AmqpSettings) -> dict[str, Any]:
    """Up to ``unrouted_max_bytes``, then the broker nacks (the ingress answers 503): an
    accepted event is never dropped silently (contract §7)."""
    return queue_arguments(
        amqp.queue_type,
        **{"x-max-length-bytes": amqp.unrouted_max_bytes, "x-overflow": "reject-publish"},
    )


async def _declare_store(
    channel: AbstractChannel, name: str, arguments: dict[str, Any]
) -> aio_pika.abc.AbstractQueue:
    try:
        return await channel.declare_queue(name, durable=True, arguments=arguments)
    except ChannelPreconditionFailed as exc:
        raise StoreArgumentsDiffer(
            f"queue {name!r} exists with other arguments than these settings need "
            f"({exc.args[0] if exc.args else exc}); RabbitMQ cannot change them in place: "
            "move its messages elsewhere, delete it and start again (README, "
            '"Limits and abuse")'
        ) from exc


async def declare_ingress(channel: AbstractChannel, amqp: AmqpSettings) -> AbstractExchange:
    """Declare the main exchange, its alternate exchange and the rejected-request exchange.

    Returns the main exchange, the one the ingress publishes events to.
    """
    names = Names.for_prefix(amqp.exchange)
    unrouted = await channel.declare_exchange(
        names.unrouted, aio_pika.ExchangeType.FANOUT, durable=True
    )
    unrouted_queue = await _declare_store(channel, names.unrouted, unrouted_arguments(amqp))
    await unrouted_queue.bind(unrouted, routing_key="")
    rejected = await channel.declare_exchange(
        names.rejected, aio_pika.ExchangeType.FANOUT, durable=True
    )
    rejected_queue = await _declare_store(channel, names.rejected, rejected_arguments(amqp))
    await rejected_queue.bind(rejected, routing_key="")
    return await channel.declare_exchange(
        names.exchange,
        aio_pika.ExchangeType.TOPIC,
        durable=True,
        arguments={"alternate-exchange": names.unrouted},
    )


async def declare_worker_queue(
    channel: AbstractChannel,
    amqp: AmqpSettings,
    workers: WorkerSettings,
    queue: str,
    bindings: tuple[str, ...],
) -> aio_pika.abc.AbstractQueue:
    """Declare a worker's queue, its bindings, its retry queues and its ``.dlq``.

    Each retry queue holds the failed messages of one backoff delay, each until its own
    jittered expiration (``consumers.retry``) or at most the queue's TTL
    (``retry_ttl_ms``), then dead-letters it back into ``queue``.
    """
    exchange = await declare_ingress(channel, amqp)
    dlq = dlq_name(queue)
    await channel.declare_queue(dlq, durable=True, arguments=queue_arguments(amqp.queue_type))
    for delay in sorted(set(workers.retry_backoff_s)):
        await channel.declare_queue(
            retry_queue_name(queue, delay, jitter=workers.retry_jitter),
            durable=True,
            arguments=retry_queue_arguments(amqp.queue_type, queue, delay, workers.retry_jitter),
        )
    main_arguments = queue_arguments(amqp.queue_type)
    if amqp.queue_type == "quorum":
        main_arguments["x-delivery-limit"] = POISON_DELIVERY_LIMIT
        main_arguments.update(_at_least_once_dead_lettering(amqp.queue_type, dlq))
    declared = await channel.declare_queue(queue, durable=True, arguments=main_arguments)
    for pattern in bindings:
        await declared.bind(exchange, routing_key=pattern)
    return declared


async def declare_all(
    channel: AbstractChannel, amqp: AmqpSettings, workers: WorkerSettings
) -> None:
    """Everything ``event-gateway topology`` promises: ingress exchanges and built-in queues."""
    names = Names.for_prefix(amqp.exchange)
    await declare_ingress(channel, amqp)
    for short, bindings in BUILTIN_BINDINGS.items():
        await declare_worker_queue(channel, amqp, workers, names.queue(short), bindings)
