"""Retry queues on the real RabbitMQ: jittered waits on both sides of the backoff, the
queues' arguments, and an upgrade from the un-jittered layout."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import replace

import pytest
from aio_pika import DeliveryMode, Message
from aio_pika.abc import AbstractChannel
from aiormq.exceptions import ChannelPreconditionFailed

import consumers.worker
from consumers import Event
from consumers.retry import jittered
from consumers.worker import WorkerSpec
from gateway.topology import declare_worker_queue, retry_queue_name, retry_queue_names
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
BACKOFF_S = 0.5
JITTER = 0.4
LONGEST_S = BACKOFF_S * (1 + JITTER)  # 0.7 s: the retry queue's TTL
SLACK_S = 1.0  # broker expiry, dead-lettering and redelivery, on a loaded machine

Uniform = Callable[[float, float], float]


def _plus(low: float, high: float) -> float:
    return high


def _minus(low: float, high: float) -> float:
    return low


@pytest.mark.parametrize(
    ("uniform", "earliest_s", "latest_s"),
    [
        (_plus, LONGEST_S, LONGEST_S + SLACK_S),
        (_minus, BACKOFF_S * (1 - JITTER), LONGEST_S),
    ],
    ids=["plus-end", "minus-end"],
)
async def test_a_retry_waits_its_jittered_backoff_on_either_side(
    env: Broker,
    monkeypatch: pytest.MonkeyPatch,
    uniform: Uniform,
    earliest_s: float,
    latest_s: float,
) -> None:
    """At +jitter the retry comes back after backoff * (1 + jitter), past the backoff (the
    queue TTL no longer caps it); at -jitter after backoff * (1 - jitter), well before."""
    monkeypatch.setattr(consumers.worker, "jittered", functools.partial(jittered, uniform=uniform))
    settings = make_settings(env.prefix, retry_backoff_s=(BACKOFF_S,), retry_jitter=JITTER)
    loop = asyncio.get_running_loop()
    calls: list[float] = []

    async def handler(event: Event) -> None:
        calls.append(loop.time())
        if len(calls) == 1:
            raise RuntimeError("first attempt fails")

    queue = env.track(f"{env.prefix}.work", settings)
    spec = WorkerSpec(queue=queue, bindings=(BINDING,), handler=handler)
    channel = await env.channel()
    async with running_worker(settings, spec):
        await publish_events(channel, settings, [as_received(fixture("camara-roaming-status"))])
        await eventually(lambda: len(calls) == 2, what="the retried delivery")
    waited = calls[1] - calls[0]
    assert earliest_s - 0.01 <= waited < latest_s, waited
    if uniform is _plus:
        assert waited > BACKOFF_S
    for name in (queue, *retry_queue_names(queue, settings.workers)):
        assert await queue_depth(channel, name) == 0


async def test_retry_queue_arguments_are_the_documented_ones(env: Broker) -> None:
    """The retry queue is named for its TTL, holds at most backoff * (1 + jitter) ms and
    dead-letters back to the work queue; the broker refuses it with the backoff as TTL."""
    settings = make_settings(env.prefix, retry_backoff_s=(BACKOFF_S,), retry_jitter=JITTER)
    queue = env.track(f"{env.prefix}.work", settings)
    channel = await env.channel()
    await declare_worker_queue(channel, settings.amqp, settings.workers, queue, (BINDING,))
    name = f"{queue}.retry.500ms.ttl700ms"
    assert retry_queue_names(queue, settings.workers) == [name]
    expected = {
        "x-queue-type": "quorum",
        "x-message-ttl": 700,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    # A declare with other arguments than the queue's is refused: this one passes, so these
    # are its arguments.
    await channel.declare_queue(name, durable=True, arguments=expected)
    other = await env.channel()
    with pytest.raises(ChannelPreconditionFailed):
        await other.declare_queue(name, durable=True, arguments={**expected, "x-message-ttl": 500})


async def test_upgrading_to_jitter_leaves_old_retry_queues_draining(env: Broker) -> None:
    """A deployment declared without jitter (``.retry.500ms``, TTL = backoff) redeclares
    with jitter without PRECONDITION_FAILED: it gets new retry queues, and what the old one
    holds still dead-letters back to the work queue."""
    old = make_settings(env.prefix, retry_backoff_s=(BACKOFF_S,), retry_jitter=0.0)
    new = replace(old, workers=replace(old.workers, retry_jitter=JITTER))
    queue = env.track(f"{env.prefix}.work", old)
    env.track(queue, new)
    old_retry = retry_queue_name(queue, BACKOFF_S, jitter=0.0)
    new_retry = retry_queue_name(queue, BACKOFF_S, jitter=JITTER)
    assert (old_retry, new_retry) == (f"{queue}.retry.500ms", f"{queue}.retry.500ms.ttl700ms")
    channel = await env.channel()
    await declare_worker_queue(channel, old.amqp, old.workers, queue, (BINDING,))
    await channel.default_exchange.publish(
        Message(b"{}", delivery_mode=DeliveryMode.PERSISTENT, message_id="left-behind"),
        routing_key=old_retry,
    )
    await declare_worker_queue(channel, new.amqp, new.workers, queue, (BINDING,))
    await channel.declare_queue(new_retry, passive=True)
    await eventually(
        lambda: _depth_is(channel, queue, 1), what="the old retry queue's message back"
    )
    assert await queue_depth(channel, old_retry) == 0
    work = await channel.declare_queue(queue, passive=True)
    message = await work.get(no_ack=True)
    assert message.message_id == "left-behind"


async def _depth_is(channel: AbstractChannel, queue: str, depth: int) -> bool:
    return await queue_depth(channel, queue) == depth
