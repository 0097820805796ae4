"""The worker runtime against the real RabbitMQ: ack, retry, dead-letter, bounded concurrency,
drain on stop, health and metrics."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import replace

import aiohttp
import pytest
from aio_pika import DeliveryMode, Message

from consumers import Event, Unprocessable
from consumers.health import serve_health
from consumers.metrics import WorkerMetrics
from consumers.retry import ATTEMPTS_HEADER, ERROR_HEADER
from consumers.worker import Worker, WorkerSpec
from gateway.settings import Settings
from gateway.topology import dlq_name, retry_queue_names
from tests.tcp_proxy import TcpProxy
from tests.worker_support import (
    Broker,
    as_received,
    eventually,
    fixture,
    make_settings,
    publish_events,
    queue_depth,
    running_worker,
)

BINDING = "org.camaraproject.device-roaming-status-subscriptions.v0.*"


def _spec(env: Broker, settings: Settings, handler: object, name: str = "work") -> WorkerSpec:
    queue = env.track(f"{env.prefix}.{name}", settings)
    return WorkerSpec(queue=queue, bindings=(BINDING,), handler=handler)  # type: ignore[arg-type]


def _event(n: int = 0) -> dict[str, object]:
    event = as_received(fixture("camara-roaming-status"))
    event["id"] = f"evt-{n}"
    return event


def _count(worker: Worker, outcome: str) -> float:
    value = worker.metrics.registry.get_sample_value(
        "gateway_worker_deliveries_total", {"queue": worker.spec.queue, "outcome": outcome}
    )
    return value or 0.0


async def test_successful_handler_gets_an_event_and_message_is_acked(env: Broker) -> None:
    """A handler sees the parsed Event; the message is acked and the queue ends empty."""
    settings = make_settings(env.prefix)
    seen: list[Event] = []

    async def handler(event: Event) -> None:
        seen.append(event)

    spec = _spec(env, settings, handler)
    channel = await env.channel()
    async with running_worker(settings, spec) as worker:
        await publish_events(channel, settings, [_event(1)])
        await eventually(lambda: _count(worker, "ok") == 1, what="ack")
    assert [e.id for e in seen] == ["evt-1"]
    assert seen[0].data["roaming"] is True
    assert seen[0].extensions["gatewaysource"] == "test"
    assert await queue_depth(channel, spec.queue) == 0


async def test_always_failing_handler_ends_in_dlq_with_both_headers(env: Broker) -> None:
    """After max_attempts failures the message is in .dlq with attempts and the last error."""
    settings = make_settings(env.prefix, max_attempts=3, retry_backoff_s=(0.05, 0.1))
    calls = 0

    async def handler(event: Event) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError(f"boom {calls}\nsecond line " + "x" * 600)

    spec = _spec(env, settings, handler)
    channel = await env.channel()
    async with running_worker(settings, spec) as worker:
        await publish_events(channel, settings, [_event(1)])
        await eventually(lambda: _count(worker, "dead_lettered") == 1, what="DLQ")
    dlq = await channel.declare_queue(dlq_name(spec.queue), passive=True)
    message = await dlq.get(no_ack=True)
    assert calls == 3
    assert message.headers[ATTEMPTS_HEADER] == 3
    error = message.headers[ERROR_HEADER]
    assert isinstance(error, str)
    assert error.startswith("RuntimeError: boom 3 second line x")
    assert "\n" not in error
    assert len(error) <= 500
    assert message.message_id == "evt-1"
    assert message.content_type == "application/cloudevents+json"
    assert message.delivery_mode == DeliveryMode.PERSISTENT
    assert Event.from_body(message.body).id == "evt-1"
    assert _count(worker, "retried") == 2
    for name in (spec.queue, *retry_queue_names(spec.queue, settings.workers)):
        assert await queue_depth(channel, name) == 0


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
async def test_handler_that_fails_twice_then_succeeds_is_acked_once(
    env: Broker, queue_type: str
) -> None:
    """Two failures then success: three calls, one ack, nothing left in queue, retry or DLQ."""
    settings = make_settings(env.prefix, queue_type=queue_type, max_attempts=3)
    attempts: list[int] = []

    async def handler(event: Event) -> None:
        attempts.append(len(attempts) + 1)
        if len(attempts) < 3:
            raise ValueError("not yet")

    spec = _spec(env, settings, handler)
    channel = await env.channel()
    async with running_worker(settings, spec) as worker:
        await publish_events(channel, settings, [_event(1)])
        await eventually(lambda: _count(worker, "ok") == 1, what="success")
    assert attempts == [1, 2, 3]
    assert _count(worker, "retried") == 2
    assert _count(worker, "dead_lettered") == 0
    # The worker has closed its channel: an unacked message would be back in the queue now.
    retry_queues = retry_queue_names(spec.queue, settings.workers)
    for name in (spec.queue, dlq_name(spec.queue), *retry_queues):
        assert await queue_depth(channel, name) == 0


@pytest.mark.parametrize(
    "body",
    [b"not json at all", b"[1, 2]", b'{"id": "x", "source": "/s", "type": "t"}'],
    ids=["not-json", "not-object", "no-specversion"],
)
async def test_unparseable_message_goes_straight_to_dlq(env: Broker, body: bytes) -> None:
    """A body that is no CloudEvent is dead-lettered on its first attempt; no handler runs."""
    settings = make_settings(env.prefix)
    calls = 0

    async def handler(event: Event) -> None:
        nonlocal calls
        calls += 1

    spec = _spec(env, settings, handler)
    channel = await env.channel()
    async with running_worker(settings, spec) as worker:
        exchange = await channel.get_exchange(env.prefix)
        await exchange.publish(
            Message(body, delivery_mode=DeliveryMode.PERSISTENT, message_id="bad-1"),
            routing_key=BINDING.replace("*", "roaming-status"),
        )
        await eventually(lambda: _count(worker, "dead_lettered") == 1, what="DLQ")
    dlq = await channel.declare_queue(dlq_name(spec.queue), passive=True)
    message = await dlq.get(no_ack=True)
    assert calls == 0
    assert message.body == body
    assert message.headers[ATTEMPTS_HEADER] == 1
    assert str(message.headers[ERROR_HEADER]).startswith("InvalidEvent: ")


async def test_unprocessable_is_dead_lettered_without_retry(env: Broker) -> None:
    """A handler raising Unprocessable sends the event to .dlq after one attempt."""
    settings = make_settings(env.prefix, max_attempts=5)
    calls = 0

    async def handler(event: Event) -> None:
        nonlocal calls
        calls += 1
        raise Unprocessable("no device")

    spec = _spec(env, settings, handler)
    channel = await env.channel()
    async with running_worker(settings, spec) as worker:
        await publish_events(channel, settings, [_event(1)])
        await eventually(lambda: _count(worker, "dead_lettered") == 1, what="DLQ")
    message = await (await channel.declare_queue(dlq_name(spec.queue), passive=True)).get()
    assert calls == 1
    assert message.headers[ATTEMPTS_HEADER] == 1
    assert message.headers[ERROR_HEADER] == "Unprocessable: no device"


async def test_prefetch_bounds_handlers_in_flight(env: Broker) -> None:
    """With prefetch 3, three handlers run at once and the other messages wait in the queue."""
    settings = make_settings(env.prefix, prefetch=3)
    gate = asyncio.Event()
    running = 0
    most = 0

    async def handler(event: Event) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await gate.wait()
        running -= 1

    spec = _spec(env, settings, handler)
    channel = await env.channel()
    async with running_worker(settings, spec) as worker:
        await publish_events(channel, settings, [_event(n) for n in range(10)])

        async def three_running_seven_waiting() -> bool:
            return running == 3 and await queue_depth(channel, spec.queue) == 7

        await eventually(three_running_seven_waiting, what="3 in flight")
        gate.set()
        await eventually(lambda: _count(worker, "ok") == 10, what="all acked")
    assert most == 3


async def test_stop_drains_in_flight_handlers_then_acks(env: Broker) -> None:
    """On stop the consumer is cancelled, handlers in flight finish and their messages are acked."""
    settings = make_settings(env.prefix, prefetch=4)
    gate = asyncio.Event()
    started = 0
    finished: list[str] = []

    async def handler(event: Event) -> None:
        nonlocal started
        started += 1
        await gate.wait()
        finished.append(event.id)

    spec = _spec(env, settings, handler)
    channel = await env.channel()
    worker = Worker(settings, spec)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(worker.run(stop, ready))
    await ready.wait()
    await publish_events(channel, settings, [_event(1), _event(2)])
    await eventually(lambda: started == 2, what="handlers started")
    stop.set()
    await eventually(lambda: not worker.ready, what="intake stopped")
    await publish_events(channel, settings, [_event(3)])
    gate.set()
    await asyncio.wait_for(task, 10)
    assert sorted(finished) == ["evt-1", "evt-2"]
    assert _count(worker, "ok") == 2
    assert await queue_depth(channel, spec.queue) == 1  # evt-3 arrived after intake stopped


async def test_drain_timeout_cancels_handlers_and_their_messages_come_back(env: Broker) -> None:
    """A handler still running at the drain deadline is cancelled; its message is not acked."""
    settings = make_settings(env.prefix, drain_timeout_s=0.2)
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def handler(event: Event) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    spec = _spec(env, settings, handler)
    channel = await env.channel()
    worker = Worker(settings, spec)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(worker.run(stop, ready))
    await ready.wait()
    await publish_events(channel, settings, [_event(1)])
    await asyncio.wait_for(started.wait(), 10)
    stop.set()
    await asyncio.wait_for(task, 10)
    assert cancelled.is_set()

    async def back_in_queue() -> bool:
        return await queue_depth(channel, spec.queue) == 1

    await eventually(back_in_queue, what="redelivery")


async def test_health_and_metrics_endpoints(env: Broker) -> None:
    """/readyz is 200 while consuming and 503 before and after; /healthz is 200 throughout;
    /metrics counts deliveries; no version banner."""
    settings = make_settings(env.prefix)

    async def handler(event: Event) -> None:
        return None

    spec = _spec(env, settings, handler)
    channel = await env.channel()
    metrics = WorkerMetrics()
    worker = Worker(settings, spec, metrics=metrics)
    stop, ready = asyncio.Event(), asyncio.Event()
    async with (
        serve_health(
            0,
            metrics.registry,
            alive=lambda: worker.alive,
            ready=lambda: worker.ready,
            host="127.0.0.1",
        ) as port,
        aiohttp.ClientSession() as http,
    ):
        base = f"http://127.0.0.1:{port}"

        async def status(path: str) -> int:
            async with http.get(f"{base}{path}") as response:
                return response.status

        assert (await status("/readyz"), await status("/healthz")) == (503, 200)
        task = asyncio.create_task(worker.run(stop, ready))
        await ready.wait()
        assert (await status("/readyz"), await status("/healthz")) == (200, 200)
        await publish_events(channel, settings, [_event(1)])
        await eventually(lambda: _count(worker, "ok") == 1, what="ack")
        async with http.get(f"{base}/metrics") as response:
            text = await response.text()
            assert response.headers["Server"] == "event-gateway"  # no version banner
        assert f'gateway_worker_deliveries_total{{outcome="ok",queue="{spec.queue}"}} 1.0' in text
        assert "gateway_worker_handler_duration_seconds_bucket" in text
        stop.set()
        await asyncio.wait_for(task, 10)
        assert (await status("/readyz"), await status("/healthz")) == (503, 200)


async def test_worker_consumes_again_after_the_connection_drops(env: Broker) -> None:
    """When the connection drops the worker is not ready, reconnects with backoff, declares
    and consumes again by itself."""
    seen: list[str] = []

    async def handler(event: Event) -> None:
        seen.append(event.id)

    channel = await env.channel()
    proxy = TcpProxy("127.0.0.1", 5672)
    await proxy.start()
    try:
        settings = make_settings(env.prefix)
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
        settings = replace(settings, amqp=replace(settings.amqp, url=url, urls=(url,)))
        spec = _spec(env, settings, handler)
        async with running_worker(settings, spec) as worker:
            await publish_events(channel, settings, [_event(1)])
            await eventually(lambda: "evt-1" in seen, what="first event")
            await proxy.cut()
            await eventually(lambda: not worker.ready, what="not ready once cut")
            await proxy.restore()
            await eventually(lambda: worker.ready, what="consuming again")
            assert worker.alive
            await publish_events(channel, settings, [_event(2)])
            # evt-1 may come twice: an ack in flight when the connection dropped is lost.
            await eventually(lambda: "evt-2" in seen, what="second event")
    finally:
        await proxy.close()


def test_importing_consumers_loads_no_web_stack() -> None:
    """``import consumers`` (and the worker, CLI and handler modules) never imports aiohttp."""
    code = (
        "import sys, consumers, consumers.worker, consumers.cli, consumers.dlq, "
        "consumers.handlers, consumers.loader\n"
        "assert 'aiohttp' not in sys.modules, sorted(m for m in sys.modules if 'aiohttp' in m)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
