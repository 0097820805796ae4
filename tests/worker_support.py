"""Shared pieces of the worker tests: settings on a unique exchange prefix, publishing events
the way the ingress does, polling with a deadline, and deleting what a test declared."""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from consumers.metrics import WorkerMetrics
from consumers.worker import Worker, WorkerSpec
from gateway.amqp_message import to_message
from gateway.cloudevent import rfc3339
from gateway.settings import AmqpSettings, Settings, StateSettings, WorkerSettings
from gateway.topology import Names, declare_ingress, dlq_name, retry_queue_name
from tests.broker import AMQP_URL, POSTGRES_URL, unique_prefix

__all__ = ["AMQP_URL", "POSTGRES_URL"]

FIXTURES = Path(__file__).parent / "fixtures"
DEADLINE_S = 15.0


def fixture(name: str) -> dict[str, Any]:
    """A fixture file as a dict (a fresh copy each time)."""
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    return data


def make_settings(
    prefix: str,
    state_url: str = "sqlite:///:memory:",
    *,
    queue_type: str = "quorum",
    **workers: Any,
) -> Settings:
    """Settings on ``prefix`` with fast retries (3 attempts, 50 ms apart) unless overridden."""
    worker_settings = replace(
        WorkerSettings(prefetch=8, max_attempts=3, retry_backoff_s=(0.05,), drain_timeout_s=5.0),
        **workers,
    )
    return Settings(
        amqp=AmqpSettings(url=AMQP_URL, exchange=prefix, queue_type=queue_type),
        state=StateSettings(url=state_url),
        workers=worker_settings,
    )


def as_received(event: dict[str, Any], source: str = "test") -> dict[str, Any]:
    """The event as the ingress would publish it: with ``gatewaysource``/``gatewayreceived``."""
    out = copy.deepcopy(event)
    out.setdefault("gatewaysource", source)
    out.setdefault("gatewayreceived", rfc3339(datetime.now(UTC)))
    return out


async def publish_events(
    channel: AbstractChannel, settings: Settings, events: Iterable[dict[str, Any]]
) -> None:
    """Publish events to the exchange, routing key = type, as ``gateway.amqp_message`` does."""
    exchange = await declare_ingress(channel, settings.amqp)
    for event in events:
        received = datetime.now(UTC)
        await exchange.publish(to_message(event, received), routing_key=event["type"])


async def eventually(
    check: Callable[[], bool | Awaitable[bool]],
    deadline_s: float = DEADLINE_S,
    what: str = "condition",
) -> None:
    """Poll ``check`` (plain or async) until it is true; fail after ``deadline_s``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def queue_depth(channel: AbstractChannel, name: str) -> int:
    """Ready messages in ``name`` (0 when it does not exist)."""
    try:
        queue = await channel.declare_queue(name, passive=True)
    except aio_pika.exceptions.ChannelNotFoundEntity:
        return 0
    return queue.declaration_result.message_count or 0


async def drain_queue(channel: AbstractChannel, name: str) -> list[AbstractIncomingMessage]:
    """Take (and ack) every message in ``name``."""
    queue = await channel.declare_queue(name, passive=True)
    taken = []
    while (message := await queue.get(no_ack=False, fail=False)) is not None:
        await message.ack()
        taken.append(message)
    return taken


@dataclass
class Broker:
    """A test's connection and the names it declared, deleted at the end."""

    connection: aio_pika.abc.AbstractConnection
    prefix: str
    worker_queues: set[str] = field(default_factory=set)
    extra_queues: set[str] = field(default_factory=set)
    retry_delays: set[float] = field(default_factory=set)

    async def channel(self) -> AbstractChannel:
        return await self.connection.channel()

    def track(self, queue: str, settings: Settings) -> str:
        """Remember a worker queue (and its retry queues and DLQ) for the cleanup."""
        self.worker_queues.add(queue)
        self.retry_delays.update(settings.workers.retry_backoff_s)
        return queue

    async def cleanup(self) -> None:
        """Delete every queue and exchange the test declared under its prefix."""
        names = Names.for_prefix(self.prefix)
        queues = {names.unrouted, names.rejected, *self.extra_queues}
        for queue in self.worker_queues:
            queues |= {queue, dlq_name(queue)}
            queues |= {retry_queue_name(queue, d) for d in self.retry_delays}
        channel = await self.connection.channel()
        for queue in sorted(queues):
            await channel.queue_delete(queue)
        for exchange in (names.exchange, names.unrouted, names.rejected):
            await channel.exchange_delete(exchange)
        await channel.close()


@asynccontextmanager
async def broker() -> AsyncIterator[Broker]:
    """A connection on a fresh prefix; everything tracked under it is deleted afterwards."""
    connection = await aio_pika.connect(AMQP_URL)
    state = Broker(connection, unique_prefix())
    try:
        yield state
    finally:
        try:
            await state.cleanup()
        finally:
            await connection.close()


@asynccontextmanager
async def running_worker(
    settings: Settings, spec: WorkerSpec, **kwargs: Any
) -> AsyncIterator[Worker]:
    """A worker consuming in this event loop; stopped (drained) when the block ends."""
    worker = Worker(settings, spec, **kwargs)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(worker.run(stop, ready))
    ready_wait = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait({task, ready_wait}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready_wait.cancel()
        task.result()  # raises what went wrong
    try:
        yield worker
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def sqlite_url(directory: Path) -> str:
    """A state URL for a fresh SQLite file in ``directory``."""
    return f"sqlite:///{directory}/state.db"


def with_changes(event: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A deep copy of ``event`` with top-level members replaced."""
    out = copy.deepcopy(event)
    out.update(changes)
    return out


async def run_until_settled(
    settings: Settings, spec: WorkerSpec, channel: AbstractChannel, events: list[dict[str, Any]]
) -> WorkerMetrics:
    """Run a worker, publish ``events``, wait until each is acked or dead-lettered, stop."""
    metrics = WorkerMetrics()
    async with running_worker(settings, spec, metrics=metrics):
        await publish_events(channel, settings, events)
        await eventually(
            lambda: settled(metrics, spec.queue) >= len(events), what=f"{len(events)} settled"
        )
    return metrics


def settled(metrics: WorkerMetrics, queue: str) -> float:
    """Deliveries of ``queue`` that are finished: acked or dead-lettered."""
    return delivered(metrics, queue, "ok") + delivered(metrics, queue, "dead_lettered")


def delivered(metrics: WorkerMetrics, queue: str, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "gateway_worker_deliveries_total", {"queue": queue, "outcome": outcome}
    )
    return value or 0.0
