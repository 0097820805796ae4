"""The worker runtime: one queue, one handler, at-least-once.

A worker declares its queue (bindings, retry queues, ``.dlq``; ``gateway.topology``), then
consumes with ``prefetch`` unacknowledged messages at most, so at most that many handlers run
at once. A handler gets an ``Event``, never the AMQP message; the worker alone settles it:

* the handler returned: ack (built-in handlers have committed their state by then);
* it raised: republish with confirm to the retry queue (its backoff ± ``retry_jitter``, as
  a per-message expiration) or ``.dlq`` (``consumers.retry``), then ack; ``Unprocessable``
  goes to ``.dlq`` at once, and so does a message that carries anything malformed (a bad
  ``x-gateway-attempts``, an undecodable header or property, a body that is no CloudEvent:
  ``consumers.poison``), while the rest of its batch is applied;
* the republish failed: nack with requeue, the broker delivers it again.

Sessions (``run``): the worker opens its state store and connects to a node of
``[amqp] urls`` (``gateway.broker_connect.NodeRing``), waiting with ``consumers.backoff``
for as long as either is unreachable; it never exits for that. A session then consumes until
``stop``, or until something ends it: the connection or channel closed, the broker cancelled
the consumer, a delivery task died of an unexpected error, or the state store went away.
Then the in-flight work is cancelled (its messages are not acked, so they come back), the
channel and connection are closed, and a new session starts on the next node. ``ready``
(``/readyz``) is true only while a session consumes; ``alive`` (``/healthz``) is false only
when the supervising loop itself has not ticked for ``STALL_S``.

Built-in handlers are planners (``planner``): pure functions from an event to its store
writes (``consumers.handlers``). They run in batches: the deliveries that are ready at the
same time (at most ``prefetch``; nothing waits for more) are each planned, an event that
cannot be failing alone; the batch's writes are then applied at once
(``StateStore.apply_writes``) and its messages acked (``consumers.acks``: one ``multiple``
ack where that is safe). If applying the batch fails, each of its events is planned and
applied alone (``applying``), as a custom handler's is delivered; if it fails because the
store is unreachable, nothing is acked and the session ends until the store answers.

Shutdown (``stop`` set): cancel the consumer, wait up to ``drain_timeout_s`` for the handlers
(batches) in flight, cancel the rest (their messages are redelivered), close the channel, the
connection and the state store it opened. Cancelling ``run`` skips the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aio_pika
import structlog
from aio_pika import DeliveryMode, Message
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
)
from prometheus_client import Counter

from consumers import lenient_decoding, poison
from consumers.acks import AckTracker
from consumers.backoff import Backoff, store_unreachable
from consumers.event import Event, InvalidEvent, Unprocessable
from consumers.metrics import WorkerMetrics
from consumers.poison import MalformedMessage
from consumers.retry import (
    ATTEMPTS_HEADER,
    ERROR_HEADER,
    backoff_for,
    error_line,
    jittered,
    read_attempts,
    republished,
    route_failure,
)
from consumers.source_policy import SourcePolicy, guarded
from consumers.state.writes import Write
from gateway.broker_connect import NodeRing, node_name
from gateway.logs import get_logger
from gateway.settings import Settings
from gateway.topology import declare_worker_queue, dlq_name
from gateway.tracing import BatchTrace, worker_tracing

if TYPE_CHECKING:
    from consumers.state import StateStore

Handler = Callable[[Event], Awaitable[None]]
Planner = Callable[[Event], Sequence[Write]]
"""A built-in handler: the writes an event implies, without I/O; ``Unprocessable`` for an
event that can never be applied."""
CLOSE_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 10.0
# Opening a channel, declaring the topology and consuming: a broker that accepts the
# connection but answers none of that ends the session.
SETUP_TIMEOUT_S = 30.0
TICK_S = 1.0  # how often a session checks its consumer and beats the heartbeat
STALL_S = 60.0  # no heartbeat for this long: /healthz says the worker is stuck
STORE_DOWN = "state store unreachable"
STORE_PROBE_KEY = "health-probe"  # a device key read to see whether the store answers
# Batches being processed at once: while they are, new deliveries gather into the next one
# (one batch could leave the CPU idle during a database round trip, many would be small).
BATCHES_IN_FLIGHT = 2

log = get_logger("consumers.worker")


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a worker consumes and what it does with each event: ``queue`` is the full queue
    name, ``bindings`` its routing-key patterns on the exchange; give either ``handler`` or
    ``planner`` (a built-in handler, whose writes the worker applies to the state store)."""

    queue: str
    bindings: tuple[str, ...]
    handler: Handler | None = None
    planner: Planner | None = None

    def __post_init__(self) -> None:
        if (self.handler is None) == (self.planner is None):
            raise ValueError("a WorkerSpec needs exactly one of handler and planner")
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
        self._policy = SourcePolicy(settings.sources)
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._consuming = False
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()
        # Why the current session must end (None while it may go on); set by ``_end_session``.
        self._ended: asyncio.Event = asyncio.Event()
        self._end_reason: str | None = None
        self._store_down = False
        self._heartbeat: float | None = None
        self.node: str | None = None  # ``host:port`` of the broker node of the session
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
        # §9: OpenTelemetry consume -> handler -> state spans when configured (None: off).
        self._tracing = worker_tracing(spec.queue)

    @property
    def ready(self) -> bool:
        """Connected to the broker and consuming (``/readyz``)."""
        connection, channel = self._connection, self._channel
        return (
            self._consuming
            and not self._ended.is_set()
            and connection is not None
            and not connection.is_closed
            and channel is not None
            and not channel.is_closed
        )

    healthy = ready  # the name ``gateway.combined`` reads

    @property
    def alive(self) -> bool:
        """The supervising loop runs and has ticked within ``STALL_S`` (``/healthz``): false
        when it is stuck, never just because the broker or the store is down."""
        if self._heartbeat is None:
            return True  # not started yet: the process is still coming up
        return asyncio.get_running_loop().time() - self._heartbeat < STALL_S

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        """Consume until ``stop`` is set, then drain and close (module docstring)."""
        lenient_decoding.install()
        self._tick()
        try:
            store, own_store = self._store, False
            if self.spec.planner is not None and store is None:
                store = await self._open_store(stop)
                own_store = store is not None
                if store is None:
                    return  # stopped while waiting for it
            try:
                if self.spec.planner is not None:
                    assert store is not None
                    self._handler = applying(store, self._builtin_planner())
                    self._batch_store = store
                await self._supervise(stop, ready)
            finally:
                if own_store and store is not None:
                    await _bounded(store.close(), "state store")
        finally:
            self._heartbeat = None

    # --- sessions ------------------------------------------------------------------------------

    async def _open_store(self, stop: asyncio.Event) -> StateStore | None:
        from consumers.state import InvalidStateURL, open_store

        backoff = Backoff()
        while not stop.is_set():
            try:
                return await open_store(self.settings.state.url)
            except InvalidStateURL:
                raise
            except Exception as exc:
                await self._retry_later(stop, backoff, exc, "state store unreachable; retrying")
        return None

    async def _supervise(self, stop: asyncio.Event, ready: asyncio.Event | None) -> None:
        """Sessions, one after another, until ``stop``; waits between failed ones."""
        nodes = NodeRing(self.settings.amqp.urls)
        backoff = Backoff()
        while not stop.is_set():
            if self._store_down and not await self._wait_for_store(stop, backoff):
                return
            node = node_name(nodes.current)
            try:
                connection = await aio_pika.connect(nodes.current, timeout=CONNECT_TIMEOUT_S)
            except Exception as exc:
                nodes.advance()
                await self._retry_later(
                    stop, backoff, exc, "broker unreachable; retrying", node=node
                )
                continue
            reason = await self._session(connection, node, stop, ready, backoff)
            if stop.is_set():
                return
            self.metrics.restarts.labels(self.spec.queue).inc()
            if reason != STORE_DOWN:
                nodes.advance() if connection.is_closed else None
            delay = backoff.next()
            log.warning(
                "worker session ended; starting again",
                queue=self.spec.queue,
                node=node,
                reason=reason,
                retry_in_s=round(delay, 2),
            )
            await self._pause(stop, delay)

    async def _session(
        self,
        connection: AbstractConnection,
        node: str,
        stop: asyncio.Event,
        ready: asyncio.Event | None,
        backoff: Backoff,
    ) -> str:
        """Consume on ``connection`` until ``stop`` or an end; the reason it ended."""
        amqp, workers = self.settings.amqp, self.settings.workers
        self._connection, self._channel, self.node = connection, None, node
        self._ended, self._end_reason = asyncio.Event(), None
        self._closing, self._acks = False, AckTracker()
        ended = self._ended

        def closed(what: str) -> Callable[..., None]:
            # Only this session's: a close that completes late must not end the next one.
            def callback(_sender: Any, exc: BaseException | None = None) -> None:
                if self._ended is ended:
                    self._end_session(f"{what} closed: {_reason(exc)}")

            return callback

        connection.close_callbacks.add(closed("connection"))
        try:
            async with asyncio.timeout(SETUP_TIMEOUT_S):
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                self._channel = channel
                channel.close_callbacks.add(closed("channel"))
                await channel.set_qos(prefetch_count=workers.prefetch)
                queue = await declare_worker_queue(
                    channel, amqp, workers, self.spec.queue, self.spec.bindings
                )
                tag = await queue.consume(self._on_message)
                # aiormq drops a consumer the broker cancelled (queue deleted, node lost)
                # from this mapping and tells no one else.
                consumers = getattr(await channel.get_underlay_channel(), "consumers", {tag: 0})
            self._consuming = True
            backoff.reset()
            log.info(
                "worker consuming",
                queue=self.spec.queue,
                node=node,
                bindings=list(self.spec.bindings),
                prefetch=workers.prefetch,
            )
            if ready is not None:
                ready.set()
            while not stop.is_set() and not ended.is_set():
                self._tick()
                if tag not in consumers:
                    self._end_session("the broker cancelled the consumer")
                    break
                await _first(stop, ended, seconds=TICK_S)
            if not ended.is_set():
                await self._stop_intake(queue, tag)
                await self._drain(workers.drain_timeout_s)
                return "stopped"
        except Exception as exc:
            self._end_session(error_line(exc))
        finally:
            self._closing = True
            self._consuming = False
            await self._cancel_in_flight()
            if self._channel is not None:
                await _bounded(self._channel.close(), "channel")
            await _bounded(connection.close(), "connection")
            log.info("worker stopped", queue=self.spec.queue)
        return self._end_reason or "ended"

    def _end_session(self, reason: str, *, store_down: bool = False) -> None:
        """End the current session (first reason wins); its messages come back."""
        if self._ended.is_set():
            return
        self._end_reason = reason
        self._store_down = self._store_down or store_down
        self._consuming = False
        self._ended.set()

    async def _wait_for_store(self, stop: asyncio.Event, backoff: Backoff) -> bool:
        """Until the store answers a read again; False when stopped first."""
        assert self._batch_store is not None
        while not stop.is_set():
            self._tick()
            try:
                await asyncio.wait_for(self._batch_store.device(STORE_PROBE_KEY), CONNECT_TIMEOUT_S)
            except Exception as exc:
                await self._retry_later(stop, backoff, exc, "state store unreachable; retrying")
                continue
            self._store_down = False
            log.info("state store reachable again", queue=self.spec.queue)
            return True
        return False

    async def _retry_later(
        self, stop: asyncio.Event, backoff: Backoff, exc: Exception, what: str, **context: str
    ) -> None:
        """Log ``what`` and ``exc`` with the next back-off delay, then wait it out."""
        delay = backoff.next()
        log.warning(
            what,
            queue=self.spec.queue,
            **context,
            error=error_line(exc),
            attempt=backoff.attempts,
            retry_in_s=round(delay, 2),
        )
        await self._pause(stop, delay)

    async def _pause(self, stop: asyncio.Event, delay: float) -> None:
        """Wait ``delay`` seconds or until ``stop``, ticking the heartbeat."""
        loop = asyncio.get_running_loop()
        end = loop.time() + delay
        while not stop.is_set() and (left := end - loop.time()) > 0:
            self._tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(left, TICK_S))

    def _tick(self) -> None:
        self._heartbeat = asyncio.get_running_loop().time()

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

    def _builtin_planner(self) -> Planner:
        """The built-in planner behind the source policy: an event its ``gatewaysource`` may
        not send is ``Unprocessable`` (``consumers.source_policy``)."""
        assert self.spec.planner is not None
        return guarded(self.spec.planner, self._policy)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A delivery task ended; one that died of an error (a bug: every expected failure
        is handled inside) ends the session, so its messages come back to a fresh consumer
        instead of sitting unacked."""
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error(
                "delivery task died; restarting the consumer",
                queue=self.spec.queue,
                error=error_line(exc),
                exc_info=exc,
            )
            self._end_session(f"delivery task died: {error_line(exc)}")

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
        assert self._batch_store is not None
        started = time.perf_counter()
        plan = self._builtin_planner()
        trace = None if self._tracing is None else self._tracing.batch()
        writes: list[Write] = []
        ready: list[tuple[AbstractIncomingMessage, Event, int]] = []
        for message in messages:
            attempt, parsed = _parse(message)
            if isinstance(parsed, Exception):
                self._spawn(self._failed_in(_context(message), message, parsed, attempt, 0.0))
                continue
            event = parsed
            context = {"event_id": event.id, "event_type": event.type, "source": event.source}
            try:
                with structlog.contextvars.bound_contextvars(**context):
                    writes.extend(plan(event) if trace is None else trace.plan(event, plan))
            except Exception as exc:
                # Retried or dead-lettered on its own: the batch does not wait for that.
                self._spawn(self._failed_in(context, message, exc, attempt, self._timed(started)))
                continue
            ready.append((message, event, attempt))
        try:
            await self._commit(ready, writes, started, trace)
        except BaseException as exc:
            if trace is not None:
                trace.finish(exc)
            raise
        if trace is not None:
            trace.finish()

    async def _commit(
        self,
        ready: list[tuple[AbstractIncomingMessage, Event, int]],
        writes: list[Write],
        started: float,
        trace: BatchTrace | None = None,
    ) -> None:
        if not ready:
            return
        assert self._batch_store is not None
        try:
            writing = self._batch_store.apply_writes(writes)
            await (writing if trace is None else trace.state(writing, len(ready)))
        except Exception as exc:
            if store_unreachable(exc):
                log.warning(
                    "state store unreachable; pausing until it answers",
                    queue=self.spec.queue,
                    events=len(ready),
                    error=error_line(exc),
                )
                self._end_session(STORE_DOWN, store_down=True)
                return
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
        attempt, parsed = _parse(message)
        if isinstance(parsed, Exception):
            await self._failed_in(_context(message), message, parsed, attempt, 0.0)
            return
        event = parsed
        with structlog.contextvars.bound_contextvars(
            event_id=event.id, event_type=event.type, source=event.source
        ):
            assert self._handler is not None
            started = time.perf_counter()
            try:
                if self._tracing is None:
                    await self._handler(event)
                else:
                    await self._tracing.handle(event, self._handler)
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
        """Send a failed message on (retry queue or ``.dlq``) and ack it; nack it when that
        publish fails. A built-in handler that failed because the store is unreachable
        ends the session instead: the message comes back, no attempt used up."""
        if self._batch_store is not None and store_unreachable(exc):
            log.warning(
                "state store unreachable; pausing until it answers",
                queue=self.spec.queue,
                error=error_line(exc),
            )
            self._end_session(STORE_DOWN, store_down=True)
            return
        workers = self.settings.workers
        error = error_line(exc)
        copy = republished(message, attempts=attempt, error=error)
        headers, dropped = poison.encodable_headers(copy.headers)
        if dropped:  # kept as far as it can be: to .dlq, saying what is missing
            copy.headers = headers
            error = error_line(MalformedMessage(f"{error}; headers not encodable: {dropped}"))
            copy.headers[ERROR_HEADER] = error
        route = route_failure(
            self.spec.queue,
            attempt,
            max_attempts=workers.max_attempts,
            backoff_s=workers.retry_backoff_s,
            jitter=workers.retry_jitter,
            retryable=not isinstance(exc, Unprocessable) and not dropped,
        )
        copy.headers[ATTEMPTS_HEADER] = route.attempts
        if not route.dead_letter:
            delay = jittered(backoff_for(attempt, workers.retry_backoff_s), workers.retry_jitter)
            copy.expiration = delay
        outcome = "dead_lettered" if route.dead_letter else "retried"
        try:
            await self._republish(message, copy, route.queue, error)
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
        # The handler's own exceptions carry their traceback; the worker's checks (a body
        # that is no CloudEvent, a malformed header) say all in the error line.
        traceback = exc if not isinstance(exc, InvalidEvent | MalformedMessage) else None
        (log.error if route.dead_letter else log.warning)(
            "delivery",
            queue=self.spec.queue,
            outcome=outcome,
            attempt=attempt,
            duration_ms=round(duration * 1000, 3),
            error=error,
            next_queue=route.queue,
            exc_info=traceback,
        )

    async def _republish(
        self, message: AbstractIncomingMessage, copy: Message, queue: str, error: str
    ) -> None:
        """Publish ``copy`` to ``queue`` with confirm. Were a property of it not encodable
        (pamqp refuses before anything is sent), a bare copy (body, gateway headers) goes
        to ``.dlq`` instead."""
        channel = self._channel
        assert channel is not None
        timeout = self.settings.amqp.publish_timeout_s
        try:
            await channel.default_exchange.publish(
                copy, routing_key=queue, mandatory=True, timeout=timeout
            )
        except (TypeError, ValueError, OverflowError, struct.error) as exc:
            bare = Message(
                message.body,
                headers={
                    ATTEMPTS_HEADER: copy.headers.get(ATTEMPTS_HEADER, 1),
                    ERROR_HEADER: error_line(
                        MalformedMessage(f"{error}; properties not encodable: {error_line(exc)}")
                    ),
                },
                delivery_mode=DeliveryMode.PERSISTENT,
            )
            await channel.default_exchange.publish(
                bare, routing_key=dlq_name(self.spec.queue), mandatory=True, timeout=timeout
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


def _parse(message: AbstractIncomingMessage) -> tuple[int, Event | Exception]:
    """(attempt number, the event or why there is none). Whatever the message carries ends
    here as an exception, never escapes: ``Unprocessable`` ones for what is malformed."""
    try:
        poison.check(message)
        attempt = read_attempts(message.headers) + 1
    except Unprocessable as exc:
        return 1, exc
    except Exception as exc:  # a message must not stop the worker
        return 1, MalformedMessage(f"headers could not be read: {error_line(exc)}")
    try:
        return attempt, Event.from_body(message.body)
    except Unprocessable as exc:
        return attempt, exc
    except Exception as exc:  # e.g. RecursionError from an absurd body
        return attempt, InvalidEvent(f"body could not be read: {error_line(exc)}")


def _context(message: AbstractIncomingMessage) -> dict[str, Any]:
    """Log context of a message that has no event: its AMQP id and type."""
    return {"event_id": message.message_id, "event_type": message.type}


def _reason(exc: BaseException | None) -> str:
    return "closed" if exc is None else error_line(exc)


async def _first(*events: asyncio.Event, seconds: float) -> None:
    """Until one of ``events`` is set, at most ``seconds``."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


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


def applying(store: StateStore, planner: Planner) -> Handler:
    """A handler that applies ``planner``'s writes for one event to ``store`` at once."""

    async def handle(event: Event) -> None:
        await store.apply_writes(planner(event))

    return handle


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
