"""Shared pieces of the worker tests: settings on a unique exchange prefix, publishing events
the way the ingress does, polling with a deadline, and deleting what a test declared."""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from consumers.event import Event
from consumers.metrics import WorkerMetrics
from consumers.worker import Worker, WorkerSpec
from gateway.amqp_message import to_message
from gateway.cloudevent import rfc3339
from gateway.settings import AmqpSettings, Settings, Source, StateSettings, WorkerSettings
from gateway.topology import Names, declare_ingress, dlq_name, retry_queue_name
from tests.broker import AMQP_URL, POSTGRES_URL, unique_prefix

__all__ = ["AMQP_URL", "POSTGRES_URL"]

FIXTURES = Path(__file__).parent / "fixtures"
DEADLINE_S = 15.0
# Built-in workers apply only events whose gatewaysource may send them (contract §8):
# the sources the test events come "through" (as_received picks one by type).
TEST_SOURCES = (
    Source("test", "cloudevents"),
    Source("notify-status", "notify-delivery-status"),
    Source("notify-inbound", "notify-inbound-sms"),
)


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
        sources=TEST_SOURCES,
    )


def as_received(event: dict[str, Any], source: str | None = None) -> dict[str, Any]:
    """The event as the ingress would publish it: with ``gatewaysource``/``gatewayreceived``
    (by default the ``TEST_SOURCES`` entry allowed to send its type)."""
    out = copy.deepcopy(event)
    if source is None:
        event_type = str(event.get("type", ""))
        source = "test"
        if event_type == "notify.sms.inbound":
            source = "notify-inbound"
        elif event_type.startswith("notify."):
            source = "notify-status"
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


async def consumers_on(channel: AbstractChannel, queue: str) -> int:
    """Consumers of ``queue`` (0 while it does not exist)."""
    try:
        declared = await channel.declare_queue(queue, passive=True)
    except Exception:
        return 0
    return declared.declaration_result.consumer_count or 0


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
    retry_queues: set[tuple[str, float, float]] = field(default_factory=set)

    async def channel(self) -> AbstractChannel:
        return await self.connection.channel()

    def track(self, queue: str, settings: Settings) -> str:
        """Remember a worker queue (and its retry queues and DLQ) for the cleanup."""
        self.worker_queues.add(queue)
        jitter = settings.workers.retry_jitter
        self.retry_queues.update((queue, d, jitter) for d in settings.workers.retry_backoff_s)
        return queue

    async def cleanup(self) -> None:
        """Delete every queue and exchange the test declared under its prefix."""
        names = Names.for_prefix(self.prefix)
        queues = {names.unrouted, names.rejected, *self.extra_queues}
        for queue in self.worker_queues:
            queues |= {queue, dlq_name(queue)}
        queues |= {retry_queue_name(q, d, jitter=j) for q, d, j in self.retry_queues}
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


def notify_status(
    notify_id: str, status: str, created: str, completed: str | None
) -> dict[str, Any]:
    """A Notify SMS delivery receipt as the notify-delivery-status adapter normalizes it."""
    body = {
        "id": notify_id,
        "reference": "ref-1",
        "to": "+61412345678",
        "status": status,
        "notification_type": "sms",
        "created_at": created,
        "completed_at": completed,
        "sent_at": created,
    }
    return {
        "id": f"{notify_id}:{status}",
        "source": "/callbacks/notify-status",
        "type": "notify.sms.delivery-status",
        "specversion": "1.0",
        "subject": notify_id,
        "partitionkey": notify_id,
        "time": completed or created,
        "datacontenttype": "application/json",
        "data": body,
    }


def notify_inbound() -> dict[str, Any]:
    """The Notify inbound SMS fixture as the notify-inbound-sms adapter normalizes it."""
    body = fixture("notify-inbound-sms")
    return {
        "id": body["id"],
        "source": "/callbacks/notify-inbound",
        "type": "notify.sms.inbound",
        "specversion": "1.0",
        "subject": body["id"],
        "partitionkey": body["source_number"],
        "time": body["date_received"],
        "datacontenttype": "application/json",
        "data": body,
    }


EVENT_GATEWAY = str(Path(sys.executable).parent / "event-gateway")
ROOT = Path(__file__).resolve().parents[1]


def write_config(directory: Path, settings: Settings) -> Path:
    """A TOML config file with the ``[amqp]``, ``[state]`` and ``[workers]`` of ``settings``."""
    w = settings.workers
    backoff = ", ".join(repr(d) for d in w.retry_backoff_s)
    sources = "".join(
        f'\n[[sources]]\nname = "{s.name}"\nadapter = "{s.adapter}"\n'
        f"types = {json.dumps(s.types)}\n"
        for s in settings.sources
    )
    text = f"""
log_format = "json"
{sources or "sources = []"}

[amqp]
url = "{settings.amqp.url}"
exchange = "{settings.amqp.exchange}"
queue_type = "{settings.amqp.queue_type}"

[state]
url = "{settings.state.url}"

[workers]
prefetch = {w.prefetch}
max_attempts = {w.max_attempts}
retry_backoff_s = [{backoff}]
retry_jitter = {w.retry_jitter}
drain_timeout_s = {w.drain_timeout_s}
"""
    path = directory / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: no GATEWAY_* overrides from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(extra)
    return env


def run_cli(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``event-gateway ARGS`` to completion from the project root."""
    return subprocess.run(
        [EVENT_GATEWAY, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=cli_env(**env),
        check=False,
    )


def start_cli(*args: str, output: Path | None = None, **env: str) -> subprocess.Popen[str]:
    """Start ``event-gateway ARGS`` in the background from the project root; its stdout goes
    to ``output`` when given (to watch its log lines while it runs), else to a pipe."""
    stdout: Any = subprocess.PIPE if output is None else output.open("w", encoding="utf-8")
    try:
        return subprocess.Popen(
            [EVENT_GATEWAY, *args],
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=cli_env(**env),
        )
    finally:
        if output is not None:
            stdout.close()


async def apply_events(
    handler: Callable[[Event], Awaitable[None]], *events: dict[str, Any]
) -> None:
    """Feed events to a built-in handler in order, as a worker would."""
    for event in events:
        await handler(Event.from_dict(event))
