"""The worker runtime: one queue, one handler, at-least-once.

A worker declares its queue (bindings, retry queues, ``.dlq``; ``gateway.topology``), then
consumes with ``prefetch`` unacknowledged messages at most, so at most that many handlers run
at once. A handler gets an ``Event``, never the AMQP message; the worker alone settles it:

* the handler returned: ack (built-in handlers have committed their state by then);
* it raised: republish with confirm to the retry queue or ``.dlq`` (``consumers.retry``), then
  ack; ``Unprocessable`` (and a body that is no CloudEvent) goes to ``.dlq`` at once;
* the republish failed: nack with requeue, the broker delivers it again.

The connection is aio-pika's robust one: after a reconnect the channel re-declares the
topology and consumes again by itself; a message whose channel died is not acked and comes
back. Shutdown (``stop`` set): cancel the consumer, wait up to ``drain_timeout_s`` for the
handlers in flight, cancel the rest (their messages are redelivered), close the channel, the
connection and the state store it opened. Cancelling ``run`` skips the wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from prometheus_client import Counter

from consumers.event import Event, InvalidEvent, Unprocessable
from consumers.metrics import WorkerMetrics
from consumers.retry import attempts_made, error_line, republished, route_failure
from gateway.logs import get_logger
from gateway.settings import Settings
from gateway.topology import declare_worker_queue

if TYPE_CHECKING:
    from consumers.state import StateStore

Handler = Callable[[Event], Awaitable[None]]
HandlerFactory = Callable[["StateStore"], Handler]
CLOSE_TIMEOUT_S = 5.0

log = get_logger("consumers.worker")


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a worker consumes and what it does with each event: ``queue`` is the full queue
    name, ``bindings`` its routing-key patterns on the exchange; give either ``handler`` or
    ``handler_factory`` (a built-in handler, built from the state store)."""

    queue: str
    bindings: tuple[str, ...]
    handler: Handler | None = None
    handler_factory: HandlerFactory | None = None

    def __post_init__(self) -> None:
        if (self.handler is None) == (self.handler_factory is None):
            raise ValueError("a WorkerSpec needs exactly one of handler and handler_factory")
        if not self.bindings:
            raise ValueError(f"queue {self.queue!r} needs at least one binding")


class Worker:
    """One queue's consumer; ``run`` it until ``stop`` is set."""

    def __init__(
        self,
        settings: Settings,
        spec: WorkerSpec,
        *,
        store: StateStore | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.spec = spec
        self.metrics = metrics if metrics is not None else WorkerMetrics()
        self._store = store
        self._handler: Handler | None = spec.handler
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._consuming = False
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.metrics.prepare(spec.queue)
        # Label children resolved once: labels() costs a lock and hashing on every call.
        self._handler_seconds = self.metrics.handler_seconds.labels(spec.queue)
        self._outcomes: dict[str, Counter] = {}

    @property
    def healthy(self) -> bool:
        """Connected to the broker and consuming."""
        connection, channel = self._connection, self._channel
        return (
            self._consuming
            and connection is not None
            and connection.connected.is_set()
            and channel is not None
            and not channel.is_closed
        )

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        """Consume until ``stop`` is set, then drain and close (module docstring)."""
        store, own_store = self._store, False
        if self.spec.handler_factory is not None and store is None:
            from consumers.state import open_store

            store, own_store = await open_store(self.settings.state.url), True
        try:
            if self.spec.handler_factory is not None:
                assert store is not None
                self._handler = self.spec.handler_factory(store)
            await self._consume(stop, ready)
        finally:
            if own_store and store is not None:
                await _bounded(store.close(), "state store")

    async def _consume(self, stop: asyncio.Event, ready: asyncio.Event | None) -> None:
        amqp, workers = self.settings.amqp, self.settings.workers
        self._connection = await aio_pika.connect_robust(amqp.url)
        try:
            channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
            self._channel = channel
            await channel.set_qos(prefetch_count=workers.prefetch)
            queue = await declare_worker_queue(
                channel, amqp, workers, self.spec.queue, self.spec.bindings
            )
            tag = await queue.consume(self._on_message)
            self._consuming = True
            log.info(
                "worker consuming",
                queue=self.spec.queue,
                bindings=list(self.spec.bindings),
                prefetch=workers.prefetch,
            )
            if ready is not None:
                ready.set()
            await stop.wait()
            await self._stop_intake(queue, tag)
            await self._drain(workers.drain_timeout_s)
        finally:
            self._closing = True
            self._consuming = False
            await self._cancel_in_flight()
            if self._channel is not None:
                await _bounded(self._channel.close(), "channel")
            await _bounded(self._connection.close(), "connection")
            log.info("worker stopped", queue=self.spec.queue)

    async def _stop_intake(self, queue: AbstractQueue, tag: str) -> None:
        self._closing = True
        self._consuming = False
        log.info("worker stopping intake", queue=self.spec.queue, in_flight=len(self._tasks))
        try:
            await asyncio.wait_for(queue.cancel(tag), CLOSE_TIMEOUT_S)
        except Exception as exc:  # a dead channel delivers nothing more anyway
            log.warning("consumer cancel failed", queue=self.spec.queue, error=error_line(exc))

    async def _drain(self, timeout_s: float) -> None:
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        if pending:
            log.warning(
                "drain timed out; cancelling handlers, their messages will be redelivered",
                queue=self.spec.queue,
                cancelled=len(pending),
            )

    async def _cancel_in_flight(self) -> None:
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if self._closing:
            # Delivered between "stop" and the consumer's cancel: hand it straight back.
            await _settle(message.nack(requeue=True))
            return
        task = asyncio.create_task(self._deliver(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        attempt = attempts_made(message.headers) + 1
        try:
            event = Event.from_body(message.body)
        except InvalidEvent as exc:
            with structlog.contextvars.bound_contextvars(
                event_id=message.message_id, event_type=message.type
            ):
                await self._failed(message, exc, attempt, 0.0)
            return
        with structlog.contextvars.bound_contextvars(
            event_id=event.id, event_type=event.type, source=event.source
        ):
            assert self._handler is not None
            started = time.perf_counter()
            try:
                await self._handler(event)
            except Exception as exc:
                await self._failed(message, exc, attempt, self._timed(started))
                return
            duration = self._timed(started)
            if await _settle(message.ack()):
                self._count("ok")
                log.info(
                    "delivery",
                    queue=self.spec.queue,
                    outcome="ok",
                    attempt=attempt,
                    duration_ms=round(duration * 1000, 3),
                )

    async def _failed(
        self, message: AbstractIncomingMessage, exc: Exception, attempt: int, duration: float
    ) -> None:
        workers = self.settings.workers
        route = route_failure(
            self.spec.queue,
            attempt,
            max_attempts=workers.max_attempts,
            backoff_s=workers.retry_backoff_s,
            retryable=not isinstance(exc, Unprocessable),
        )
        error = error_line(exc)
        outcome = "dead_lettered" if route.dead_letter else "retried"
        assert self._channel is not None
        try:
            await self._channel.default_exchange.publish(
                republished(message, attempts=route.attempts, error=error),
                routing_key=route.queue,
                mandatory=True,
                timeout=self.settings.amqp.publish_timeout_s,
            )
        except Exception as publish_exc:
            log.error(
                "delivery",
                queue=self.spec.queue,
                outcome="requeued",
                attempt=attempt,
                error=error,
                publish_error=error_line(publish_exc),
            )
            self._count("requeued")
            await _settle(message.nack(requeue=True))
            return
        if not await _settle(message.ack()):
            return
        self._count(outcome)
        (log.error if route.dead_letter else log.warning)(
            "delivery",
            queue=self.spec.queue,
            outcome=outcome,
            attempt=attempt,
            duration_ms=round(duration * 1000, 3),
            error=error,
            next_queue=route.queue,
        )

    def _timed(self, started: float) -> float:
        duration = time.perf_counter() - started
        self._handler_seconds.observe(duration)
        return duration

    def _count(self, outcome: str) -> None:
        counter = self._outcomes.get(outcome)
        if counter is None:
            counter = self._outcomes[outcome] = self.metrics.deliveries.labels(
                self.spec.queue, outcome
            )
        counter.inc()


async def run_worker(
    settings: Settings,
    spec: WorkerSpec,
    *,
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
    store: StateStore | None = None,
    metrics: WorkerMetrics | None = None,
) -> None:
    """Run one worker until ``stop`` is set, then drain and close; ``ready`` is set once it is
    consuming. A built-in spec opens its own state store unless ``store`` is given (and then
    leaves it open); ``metrics`` lets several workers share one registry."""
    await Worker(settings, spec, store=store, metrics=metrics).run(stop, ready)


async def _settle(action: Coroutine[Any, Any, None]) -> bool:
    """Ack or nack; False when the channel is gone (the broker will redeliver)."""
    try:
        await action
    except Exception as exc:
        log.warning("could not settle the message; it will be redelivered", error=error_line(exc))
        return False
    return True


async def _bounded(action: Awaitable[Any], what: str) -> None:
    try:
        await asyncio.wait_for(action, CLOSE_TIMEOUT_S)
    except Exception as exc:
        log.warning("close failed", what=what, error=error_line(exc))
