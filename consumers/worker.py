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
back.

Built-in handlers (``handler_factory``) run in batches: the deliveries that are ready at the
same time (at most ``prefetch``; nothing waits for more) each go through the handler built
over a ``WriteRecorder``, which turns the event into its store writes or fails it alone; the
batch's writes are then applied at once (``StateStore.apply_writes``) and its messages acked
(``consumers.acks``: one ``multiple`` ack where that is safe). If applying the batch fails,
each of its events is delivered alone, as a custom handler's is.

Shutdown (``stop`` set): cancel the consumer, wait up to ``drain_timeout_s`` for the handlers
(batches) in flight, cancel the rest (their messages are redelivered), close the channel, the
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

from consumers.acks import AckTracker
from consumers.event import Event, InvalidEvent, Unprocessable
from consumers.metrics import WorkerMetrics
from consumers.retry import attempts_made, error_line, republished, route_failure
from consumers.source_policy import SourcePolicy, guarded
from consumers.state.writes import WriteRecorder
from gateway.logs import get_logger
from gateway.settings import Settings
from gateway.topology import declare_worker_queue

if TYPE_CHECKING:
    from consumers.state import StateStore

Handler = Callable[[Event], Awaitable[None]]
HandlerFactory = Callable[["StateStore"], Handler]
CLOSE_TIMEOUT_S = 5.0
# Batches being processed at once: while they are, new deliveries gather into the next one
# (one batch could leave the CPU idle during a database round trip, many would be small).
BATCHES_IN_FLIGHT = 2

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
        # Contract §8: built-in handlers apply only what the event's source may send.
        self._policy = SourcePolicy(settings.sources)
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._consuming = False
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()
        # Batching (built-in handlers only): deliveries waiting for the next batch.
        self._batch_store: StateStore | None = None
        self._pending: list[AbstractIncomingMessage] = []
        self._flush_scheduled = False
        self._batches = 0
        self._acks = AckTracker()
        self._ack_lock = asyncio.Lock()
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
                self._handler = self._builtin_handler(store)
                self._batch_store = store
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
        # Finishing a batch may start the next one (deliveries that waited for it).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._tasks or self._pending:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            if not self._tasks:
                self._schedule_flush()
                await asyncio.sleep(0)
                continue
            _done, _pending = await asyncio.wait(set(self._tasks), timeout=remaining)
        if self._tasks or self._pending:
            log.warning(
                "drain timed out; cancelling handlers, their messages will be redelivered",
                queue=self.spec.queue,
                cancelled=len(self._tasks) + len(self._pending),
            )

    async def _cancel_in_flight(self) -> None:
        self._pending.clear()  # not acked: the broker delivers them again
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        if self._closing:
            # Delivered between "stop" and the consumer's cancel: hand it straight back.
            if await _settle(message.nack(requeue=True)):
                self._acks.settled(message)
            return
        if self._batch_store is None:
            self._spawn(self._deliver(message))
            return
        self._pending.append(message)
        self._schedule_flush()

    def _builtin_handler(self, store: Any) -> Handler:
        """The built-in handler over ``store``, behind the source policy: an event its
        ``gatewaysource`` may not send is ``Unprocessable`` (``consumers.source_policy``)."""
        assert self.spec.handler_factory is not None
        return guarded(self.spec.handler_factory, self._policy)(store)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and self._pending and self._batches < BATCHES_IN_FLIGHT:
            # Once round the loop: the deliveries read with this one join its batch.
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._pending or self._batches >= BATCHES_IN_FLIGHT:
            return
        batch, self._pending = self._pending, []
        self._batches += 1
        self._spawn(self._deliver_batch(batch)).add_done_callback(self._batch_done)

    def _batch_done(self, _task: asyncio.Task[None]) -> None:
        self._batches -= 1
        self._schedule_flush()

    async def _deliver_batch(self, messages: list[AbstractIncomingMessage]) -> None:
        """Turn each message into store writes, apply them at once, ack (module docstring)."""
        assert self.spec.handler_factory is not None
        assert self._batch_store is not None
        started = time.perf_counter()
        recorder = WriteRecorder(self._batch_store)
        handle = self._builtin_handler(recorder)
        ready: list[tuple[AbstractIncomingMessage, Event, int]] = []
        for message in messages:
            attempt = attempts_made(message.headers) + 1
            try:
                event = Event.from_body(message.body)
            except InvalidEvent as exc:
                context = {"event_id": message.message_id, "event_type": message.type}
                self._spawn(self._failed_in(context, message, exc, attempt, 0.0))
                continue
            context = {"event_id": event.id, "event_type": event.type, "source": event.source}
            mark = len(recorder.writes)
            try:
                with structlog.contextvars.bound_contextvars(**context):
                    await handle(event)
            except Exception as exc:
                del recorder.writes[mark:]  # none of a failed event's writes are applied
                # Retried or dead-lettered on its own: the batch does not wait for that.
                self._spawn(self._failed_in(context, message, exc, attempt, self._timed(started)))
                continue
            ready.append((message, event, attempt))
        await self._commit(ready, recorder, started)

    async def _commit(
        self,
        ready: list[tuple[AbstractIncomingMessage, Event, int]],
        recorder: WriteRecorder,
        started: float,
    ) -> None:
        if not ready:
            return
        assert self._batch_store is not None
        try:
            await self._batch_store.apply_writes(recorder.writes)
        except Exception as exc:
            log.warning(
                "batch write failed; delivering its events one by one",
                queue=self.spec.queue,
                events=len(ready),
                error=error_line(exc),
            )
            await asyncio.gather(*(self._deliver(message) for message, _, _ in ready))
            return
        duration = time.perf_counter() - started
        acked = await self._ack_all([message for message, _, _ in ready])
        for message, event, attempt in ready:
            self._handler_seconds.observe(duration)
            if message in acked:
                self._delivered(
                    attempt,
                    duration,
                    event_id=event.id,
                    event_type=event.type,
                    source=event.source,
                )

    async def _ack_all(
        self, messages: list[AbstractIncomingMessage]
    ) -> set[AbstractIncomingMessage]:
        """Ack ``messages``; the ones whose ack was sent.

        Batches ack one after the other (``_ack_lock``, held until every frame is written):
        a ``multiple`` ack may only cover tags whose own ack frames are already out, and
        aiormq's write queue can reorder puts from concurrent tasks once it is full.
        """
        async with self._ack_lock:
            return await self._ack_batch(messages)

    async def _ack_batch(
        self, messages: list[AbstractIncomingMessage]
    ) -> set[AbstractIncomingMessage]:
        multiple, singles = self._acks.plan(messages)
        acked: set[AbstractIncomingMessage] = set()
        if multiple is not None:
            alone = set(singles)
            covered = [message for message in messages if message not in alone]
            for message in covered:
                self._acks.settled(message)
            if await _settle(multiple.ack(multiple=True)):
                acked.update(covered)
        if singles:
            sent = await asyncio.gather(*(self._ack_one(message) for message in singles))
            acked.update(message for message, ok in zip(singles, sent, strict=True) if ok)
        return acked

    async def _ack_one(self, message: AbstractIncomingMessage) -> bool:
        self._acks.settled(message)
        return await _settle(message.ack())

    async def _failed_in(
        self,
        context: dict[str, Any],
        message: AbstractIncomingMessage,
        exc: Exception,
        attempt: int,
        duration: float,
    ) -> None:
        with structlog.contextvars.bound_contextvars(**context):
            await self._failed(message, exc, attempt, duration)

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        attempt = attempts_made(message.headers) + 1
        try:
            event = Event.from_body(message.body)
        except InvalidEvent as exc:
            context = {"event_id": message.message_id, "event_type": message.type}
            await self._failed_in(context, message, exc, attempt, 0.0)
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
                self._acks.settled(message)
                self._delivered(attempt, duration)  # event fields are bound in the context

    def _delivered(self, attempt: int, duration: float, **event: str) -> None:
        """Count and log one event handled and acked."""
        self._count("ok")
        log.info(
            "delivery",
            queue=self.spec.queue,
            outcome="ok",
            attempt=attempt,
            duration_ms=round(duration * 1000, 3),
            **event,
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
            if await _settle(message.nack(requeue=True)):
                self._acks.settled(message)
            return
        if not await _settle(message.ack()):
            return
        self._acks.settled(message)
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
