"""Built-in workers run deliveries in batches: one store write per batch, per-event outcomes."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from aio_pika import Message

from consumers.acks import AckTracker
from consumers.event import Event
from consumers.handlers import roaming
from consumers.retry import ATTEMPTS_HEADER, ERROR_HEADER
from consumers.state import StateStore, open_store
from consumers.state.writes import Write
from consumers.worker import Planner, Worker, WorkerSpec
from gateway.settings import Settings
from gateway.topology import BUILTIN_BINDINGS, declare_worker_queue, dlq_name
from tests.worker_support import (
    Broker,
    as_received,
    eventually,
    fixture,
    make_settings,
    publish_events,
    queue_depth,
    running_worker,
    sqlite_url,
)

EVENTS = 6


class SpyStore:
    """The store, counting ``apply_writes`` calls; ``fail`` makes those of more than one
    event's writes raise (a refused batch; each event alone still goes through)."""

    def __init__(self, store: StateStore, *, fail: bool = False) -> None:
        self.store = store
        self.fail = fail
        self.batches: list[int] = []

    async def apply_writes(self, writes: Iterable[Write]) -> None:
        writes = list(writes)
        self.batches.append(len(writes))
        if self.fail and len(writes) > 2:  # a roaming-status event is 2 writes
            raise RuntimeError("batch refused")
        await self.store.apply_writes(writes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def _events(count: int) -> list[dict[str, Any]]:
    out = []
    for n in range(count):
        event = as_received(fixture("camara-roaming-status"))
        event["id"] = f"evt-{n}"
        event["partitionkey"] = f"+3670000000{n}"
        out.append(event)
    return out


def _count(worker: Worker, outcome: str) -> float:
    value = worker.metrics.registry.get_sample_value(
        "gateway_worker_deliveries_total", {"queue": worker.spec.queue, "outcome": outcome}
    )
    return value or 0.0


async def _prefilled(env: Broker, settings: Settings, events: list[dict[str, Any]]) -> str:
    """Declare the roaming queue and publish ``events`` to it before any worker runs."""
    queue = env.track(f"{env.prefix}.roaming", settings)
    channel = await env.channel()
    await declare_worker_queue(
        channel, settings.amqp, settings.workers, queue, BUILTIN_BINDINGS["roaming"]
    )
    await publish_events(channel, settings, events)
    await eventually(lambda: _depth(channel, queue, len(events)), what="queue filled")
    return queue


async def _depth(channel: Any, queue: str, count: int) -> bool:
    return await queue_depth(channel, queue) == count


def _failing_on(event_id: str) -> Planner:
    """The roaming planner, raising a retryable error for one event."""

    def plan(event: Event) -> Sequence[Write]:
        if event.id == event_id:
            raise RuntimeError(f"cannot apply {event.id}")
        return roaming.plan(event)

    return plan


async def test_a_batch_with_one_failing_event_acks_the_others_once(
    env: Broker, tmp_path: Path
) -> None:
    """The batch is written at once; the failing event alone is retried, then dead-lettered."""
    settings = make_settings(env.prefix, sqlite_url(tmp_path), prefetch=16, max_attempts=3)
    events = _events(EVENTS)
    queue = await _prefilled(env, settings, events)
    spec = WorkerSpec(
        queue=queue, bindings=BUILTIN_BINDINGS["roaming"], planner=_failing_on("evt-2")
    )
    store = await open_store(settings.state.url)
    spy = SpyStore(store)
    try:
        async with running_worker(settings, spec, store=spy) as worker:  # type: ignore[arg-type]
            await eventually(lambda: _count(worker, "dead_lettered") == 1, what="DLQ")
        # Leaving the block drained the worker: a second ack would show as a second "ok".
        assert _count(worker, "ok") == EVENTS - 1
        assert _count(worker, "retried") == 2
        # each good event written once, in batches (roaming-status: a roaming and a country write)
        assert sum(spy.batches) == 2 * (EVENTS - 1)
        for n in range(EVENTS):
            device = await store.device(f"+3670000000{n}")
            assert (device is None) == (n == 2)
    finally:
        await store.close()
    channel = await env.channel()
    dlq = await channel.declare_queue(dlq_name(queue), passive=True)
    message = await dlq.get(no_ack=True)
    assert message.message_id == "evt-2"
    assert message.headers[ATTEMPTS_HEADER] == 3
    assert message.headers[ERROR_HEADER] == "RuntimeError: cannot apply evt-2"
    assert await queue_depth(channel, queue) == 0
    assert await queue_depth(channel, dlq_name(queue)) == 0


async def test_unprocessable_and_unparseable_events_leave_the_batch_at_once(
    env: Broker, tmp_path: Path
) -> None:
    """Unprocessable and unparseable events go to the DLQ alone; the rest is written."""
    settings = make_settings(env.prefix, sqlite_url(tmp_path), prefetch=16)
    events = _events(EVENTS)
    del events[1]["partitionkey"]
    del events[1]["data"]["device"]  # no device: Unprocessable
    queue = await _prefilled(env, settings, events)
    channel = await env.channel()
    await channel.default_exchange.publish(Message(b"not json"), routing_key=queue)
    spec = WorkerSpec(
        queue=queue,
        bindings=BUILTIN_BINDINGS["roaming"],
        planner=roaming.plan,
    )
    async with running_worker(settings, spec) as worker:
        await eventually(lambda: _count(worker, "ok") == EVENTS - 1, what="acks")
        await eventually(lambda: _count(worker, "dead_lettered") == 2, what="DLQ")
    assert _count(worker, "retried") == 0
    assert await queue_depth(channel, queue) == 0
    assert await queue_depth(channel, dlq_name(queue)) == 2


async def test_a_failing_batch_write_falls_back_to_one_event_at_a_time(
    env: Broker, tmp_path: Path
) -> None:
    """When the batch write fails, every event is written and acked alone, none retried."""
    settings = make_settings(env.prefix, sqlite_url(tmp_path), prefetch=16)
    queue = await _prefilled(env, settings, _events(EVENTS))
    spec = WorkerSpec(queue=queue, bindings=BUILTIN_BINDINGS["roaming"], planner=roaming.plan)
    store = await open_store(settings.state.url)
    spy = SpyStore(store, fail=True)
    try:
        async with running_worker(settings, spec, store=spy) as worker:  # type: ignore[arg-type]
            await eventually(lambda: _count(worker, "ok") == EVENTS, what="acks")
        assert _count(worker, "ok") == EVENTS
        assert _count(worker, "retried") == 0
        assert spy.batches  # tried, refused, then each event written alone
        for n in range(EVENTS):
            assert await store.device(f"+3670000000{n}") is not None
    finally:
        await store.close()
    channel = await env.channel()
    assert await queue_depth(channel, queue) == 0


class FakeChannel:
    """Stands for an aiormq channel: compared by identity."""


class FakeMessage:
    def __init__(self, tag: int, channel: object) -> None:
        self.delivery_tag = tag
        self.channel = channel


def _plan(tracker: AckTracker, tags: list[int], channel: object) -> tuple[int | None, list[int]]:
    messages: Any = [FakeMessage(tag, channel) for tag in tags]
    multiple, singles = tracker.plan(messages)
    return (
        None if multiple is None else multiple.delivery_tag,
        [message.delivery_tag for message in singles],
    )


def _settle(tracker: AckTracker, tags: list[int], channel: object) -> None:
    for tag in tags:
        tracker.settled(FakeMessage(tag, channel))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("settled", "batch", "expected"),
    [
        ([], [1, 2, 3], (3, [])),
        ([], [2, 3], (None, [2, 3])),  # 1 is unsettled (or unseen): never covered
        ([1], [2, 3, 5], (3, [5])),  # 4 is someone else's
        ([1, 2, 4], [3, 5], (5, [])),
        ([1, 3], [2], (None, [2])),  # one message: a plain ack
        ([], [1], (None, [1])),
    ],
)
def test_the_ack_plan_covers_only_settled_or_own_tags(
    settled: list[int], batch: list[int], expected: tuple[int | None, list[int]]
) -> None:
    """A multiple ack covers only tags already settled or in the batch; the rest are acked alone."""
    tracker = AckTracker()
    channel = FakeChannel()
    _settle(tracker, settled, channel)
    assert _plan(tracker, batch, channel) == expected


def test_the_ack_plan_is_per_channel() -> None:
    """Settled tags of one channel never let a multiple ack cover another channel's tags."""
    tracker = AckTracker()
    old, new = FakeChannel(), FakeChannel()
    _settle(tracker, [1, 2, 3], old)
    assert _plan(tracker, [4, 5], new) == (None, [4, 5])
    assert _plan(tracker, [4, 5], old) == (5, [])
