"""A worker is never wedged (contract §10, §9): a dead delivery task or a consumer the broker
cancelled ends its session (not ready) and a new one consumes again; a state store outage
pauses it without using up attempts; a handler failure is logged with its traceback."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import pytest
import structlog

from consumers import Event
from consumers.handlers import builtin_spec
from consumers.state import open_store
from consumers.worker import STALL_S, Handler, Worker, WorkerSpec
from gateway.settings import Settings
from gateway.topology import dlq_name
from tests.tcp_proxy import TcpProxy
from tests.worker_support import (
    Broker,
    as_received,
    eventually,
    fixture,
    make_settings,
    notify_status,
    publish_events,
    queue_depth,
    running_worker,
)

BINDING = "org.camaraproject.device-roaming-status-subscriptions.v0.*"


def _event(n: int) -> dict[str, Any]:
    event = as_received(fixture("camara-roaming-status"))
    event["id"] = f"evt-{n}"
    return event


def _work(env: Broker, settings: Settings, handler: Handler) -> WorkerSpec:
    """A worker on ``<prefix>.work`` bound to BINDING, its queues tracked for the clean-up."""
    return WorkerSpec(env.track(f"{env.prefix}.work", settings), (BINDING,), handler=handler)


def _recording(seen: list[str]) -> Handler:
    """A handler that appends each event's id to ``seen``."""

    async def handler(event: Event) -> None:
        seen.append(event.id)

    return handler


def _restarts(worker: Worker) -> float:
    value = worker.metrics.registry.get_sample_value(
        "gateway_worker_session_restarts_total", {"queue": worker.spec.queue}
    )
    return value or 0.0


async def test_a_dead_delivery_task_restarts_the_consumer(
    env: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delivery task that dies of an unexpected error ends the session: the worker is not
    ready, starts a new session, and the message comes back and is handled."""
    seen: list[str] = []
    settings = make_settings(env.prefix)
    spec = _work(env, settings, _recording(seen))
    channel = await env.channel()
    async with running_worker(settings, spec) as worker:
        real = worker._deliver
        broken = {"left": 1}

        async def deliver_once_broken(message: Any) -> None:
            if broken["left"]:
                broken["left"] -= 1
                raise RuntimeError("a bug in the worker")
            await real(message)

        monkeypatch.setattr(worker, "_deliver", deliver_once_broken)
        await publish_events(channel, settings, [_event(1)])
        await eventually(lambda: _restarts(worker) == 1, what="a restart")
        await eventually(lambda: seen == ["evt-1"], what="the message handled after it")
        await eventually(lambda: worker.ready, what="ready again")
        assert worker.alive


async def test_a_consumer_the_broker_cancelled_is_started_again(env: Broker) -> None:
    """Deleting the queue under the worker (the broker cancels its consumer) ends the
    session; the next one declares the queue again and consumes."""
    seen: list[str] = []
    settings = make_settings(env.prefix)
    spec = _work(env, settings, _recording(seen))
    channel = await env.channel()
    async with running_worker(settings, spec) as worker:
        await channel.queue_delete(spec.queue)
        await eventually(lambda: _restarts(worker) >= 1, what="a restart")
        await eventually(lambda: worker.ready, what="consuming again")

        async def bound_again() -> bool:
            try:
                await publish_events(await env.channel(), settings, [_event(2)])
            except Exception:
                return False
            return True

        await eventually(bound_again, what="published")
        await eventually(lambda: "evt-2" in seen, what="consumed after the restart")


async def test_alive_is_false_only_when_the_supervisor_stalls(env: Broker) -> None:
    """/healthz's answer: alive while the session runs, false once its heartbeat is older
    than STALL_S (a stuck supervising loop)."""

    async def handler(event: Event) -> None:
        return None

    settings = make_settings(env.prefix)
    spec = _work(env, settings, handler)
    async with running_worker(settings, spec) as worker:
        assert worker.alive
        worker._heartbeat = asyncio.get_running_loop().time() - STALL_S - 1
        assert not worker.alive
        await eventually(lambda: worker.alive, what="the heartbeat ticks again")


async def test_a_store_outage_pauses_the_worker_and_uses_up_no_attempt(
    env: Broker, postgres_url: str
) -> None:
    """PostgreSQL cut mid-run: the worker stops consuming (not ready), nothing goes to a retry
    queue or the DLQ; once it answers again every event is applied."""
    pg = urlsplit(postgres_url)
    proxy = TcpProxy(pg.hostname or "127.0.0.1", pg.port or 5432)
    await proxy.start()
    user = pg.netloc.rsplit("@", 1)[0]
    proxied = f"postgresql://{user}@127.0.0.1:{proxy.port}{pg.path}?{pg.query}"
    # One attempt only: a single failed attempt would dead-letter the event.
    settings = make_settings(env.prefix, proxied, max_attempts=1)
    spec = builtin_spec(settings.amqp, "sms")
    env.track(spec.queue, settings)
    channel = await env.channel()
    events = [
        as_received(notify_status(f"o-{n}", "delivered", "2017-05-14T12:15:30Z", None))
        for n in range(20)
    ]
    try:
        with structlog.testing.capture_logs() as logs:
            async with running_worker(settings, spec) as worker:
                await proxy.cut()
                await publish_events(channel, settings, events)
                await eventually(lambda: _restarts(worker) >= 1, what="the session ended")
                assert not worker.ready
                await proxy.restore()
                await eventually(lambda: worker.ready, deadline_s=30, what="ready again")

                async def applied() -> bool:
                    return await queue_depth(channel, spec.queue) == 0 and worker.in_flight == 0

                await eventually(applied, deadline_s=30, what="the queue drained")
        store = await open_store(postgres_url)
        try:
            assert all([await store.message(f"o-{n}") for n in range(20)])
        finally:
            await store.close()
    finally:
        await proxy.close()
    assert await queue_depth(channel, dlq_name(spec.queue)) == 0
    said = [entry["event"] for entry in logs]
    assert "state store unreachable; pausing until it answers" in said
    assert "state store reachable again" in said


async def test_a_handler_failure_is_logged_with_its_traceback(env: Broker) -> None:
    """The log line of a failed delivery carries the handler's exception (rendered as a
    traceback by the JSON logger)."""

    async def handler(event: Event) -> None:
        raise ValueError("the handler's own bug")

    settings = make_settings(env.prefix, max_attempts=1)
    spec = _work(env, settings, handler)
    channel = await env.channel()
    with structlog.testing.capture_logs() as logs:
        async with running_worker(settings, spec):
            await publish_events(channel, settings, [_event(3)])

            async def dead() -> bool:
                return await queue_depth(channel, dlq_name(spec.queue)) == 1

            await eventually(dead, what="dead-lettered")
    [failed] = [e for e in logs if e.get("outcome") == "dead_lettered"]
    assert isinstance(failed["exc_info"], ValueError)
    assert failed["error"] == "ValueError: the handler's own bug"


def test_stall_is_longer_than_any_wait_of_the_supervisor() -> None:
    """The supervisor ticks at least every few seconds, well inside STALL_S."""
    from consumers import worker

    longest = worker.SETUP_TIMEOUT_S + 2 * worker.CLOSE_TIMEOUT_S  # a session that hangs
    assert max(worker.TICK_S, worker.CONNECT_TIMEOUT_S, longest) < STALL_S
