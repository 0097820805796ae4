"""``consumers.queue_reader`` and ``consumers.replay`` on the real broker: reading in windows
keeps a queue's order, a replay moves each message exactly once, and Ctrl-C in the middle of
a big replay leaves every message in exactly one of the two queues."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest
from aio_pika.abc import AbstractChannel
from aiormq.abc import DeliveredMessage

from consumers.queue_reader import reading
from consumers.replay import Copy, Plan, replay
from consumers.tool_connection import connect
from gateway.settings import AmqpSettings
from gateway.topology import declare_worker_queue, dlq_name
from tests.broker import AMQP_URL
from tests.queue_tools_support import dead_letter, fill, message_ids
from tests.worker_support import (
    Broker,
    eventually,
    make_settings,
    queue_depth,
    start_cli,
    write_config,
)

AMQP = AmqpSettings(url=AMQP_URL)


async def quorum_queues(env: Broker, *names: str) -> None:
    channel = await env.channel()
    for name in names:
        env.extra_queues.add(name)
        await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})


async def read_ids(queue: str, window: int) -> list[str]:
    """Every message id of ``queue`` through a listing read (nothing taken)."""
    connection = await connect(AMQP)
    ids: list[str] = []
    try:
        async with reading(connection, queue, window=window) as reader:
            while (message := await reader.next()) is not None:
                ids.append(str(message.header.properties.message_id))
    finally:
        await connection.close()
    return ids


@pytest.mark.slow
async def test_listing_keeps_the_order_of_20000_messages(env: Broker) -> None:
    """20,000 messages read in windows twice come out the same, in publish order, and stay."""
    queue = f"{env.prefix}.big"
    await quorum_queues(env, queue)
    await fill(queue, (dead_letter(n) for n in range(20_000)))
    expected = [f"d-{n}" for n in range(20_000)]
    assert await read_ids(queue, window=256) == expected
    assert await read_ids(queue, window=256) == expected
    assert await queue_depth(await env.channel(), queue) == 20_000


async def test_partial_reads_leave_the_order(env: Broker) -> None:
    """Reading only the first messages, again and again, leaves the queue in its order (a
    quorum queue puts messages handed back a second time behind the others, unless the
    whole queue is handed back together)."""
    queue = f"{env.prefix}.partial"
    await quorum_queues(env, queue)
    await fill(queue, (dead_letter(n) for n in range(50)))
    connection = await connect(AMQP)
    try:
        for _ in range(3):
            async with reading(connection, queue, window=8) as reader:
                first = [await reader.next() for _ in range(7)]
            ids = [m.header.properties.message_id for m in first if m]
            assert ids == [f"d-{n}" for n in range(7)]
    finally:
        await connection.close()
    assert await read_ids(queue, window=8) == [f"d-{n}" for n in range(50)]


async def test_replay_moves_each_message_once(env: Broker) -> None:
    """Every message is in the destination once, in order, and gone from the source."""
    source, destination = f"{env.prefix}.from", f"{env.prefix}.to"
    await quorum_queues(env, source, destination)
    await fill(source, (dead_letter(n) for n in range(3000)))

    def plan(message: DeliveredMessage) -> Plan:
        copy = Copy("", destination, message.body, message.header.properties, mandatory=True)
        return Plan((copy,), moves=True)

    connection = await connect(AMQP)
    try:
        summary = await replay(
            connection, source, plan, publish_timeout_s=5, stop=asyncio.Event(), window=128
        )
    finally:
        await connection.close()
    assert summary.as_json() == {"replayed": 3000, "failed": 0}
    assert await queue_depth(await env.channel(), source) == 0
    assert await message_ids(destination) == [f"d-{n}" for n in range(3000)]


async def test_a_filter_leaves_the_others_in_place(env: Broker) -> None:
    """Messages the replay does not want stay in the source, in their order."""
    source, destination = f"{env.prefix}.mixed", f"{env.prefix}.chosen"
    await quorum_queues(env, source, destination)
    await fill(source, (dead_letter(n) for n in range(40)))

    def plan(message: DeliveredMessage) -> Plan:
        copy = Copy("", destination, message.body, message.header.properties)
        return Plan((copy,), moves=True)

    def even(message: DeliveredMessage) -> bool:
        return int(str(message.header.properties.message_id)[2:]) % 2 == 0

    connection = await connect(AMQP)
    try:
        summary = await replay(
            connection,
            source,
            plan,
            publish_timeout_s=5,
            stop=asyncio.Event(),
            wanted=even,
            limit=10,
            window=4,
        )
    finally:
        await connection.close()
    assert summary.as_json() == {"replayed": 10, "failed": 0}
    assert await message_ids(destination) == [f"d-{n}" for n in range(0, 20, 2)]
    left = [f"d-{n}" for n in range(40) if n % 2 or n >= 20]
    assert await message_ids(source) == left


@pytest.mark.slow
async def test_ctrl_c_mid_replay_leaves_each_message_in_exactly_one_queue(
    env: Broker, tmp_path: Path
) -> None:
    """SIGINT to ``dlq replay`` of 20,000 dead letters while it moves them: it ends with the
    summary (exit 1), and counted by message id every message is in the DLQ or in the work
    queue, never both, never neither."""
    settings = make_settings(env.prefix)
    queue = env.track(f"{env.prefix}.roaming", settings)
    await declare_worker_queue(
        await env.channel(), settings.amqp, settings.workers, queue, ("nothing.bound",)
    )
    total = await fill(dlq_name(queue), (dead_letter(n) for n in range(20_000)))
    config = str(write_config(tmp_path, settings))
    process = start_cli("dlq", "replay", "roaming", "--config", config)
    channel = await env.channel()
    try:
        await eventually(
            lambda: _at_least(channel, queue, 2000), deadline_s=60, what="the replay under way"
        )
        process.send_signal(signal.SIGINT)
        stdout, stderr = await asyncio.to_thread(process.communicate, timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "Traceback" not in stderr
    summary = json.loads(stdout.splitlines()[-1])
    assert set(summary) == {"replayed", "failed"}
    moved, left = await message_ids(queue), await message_ids(dlq_name(queue))
    assert not set(moved) & set(left)
    assert len(moved) + len(left) == total
    assert set(moved) | set(left) == {f"d-{n}" for n in range(total)}
    assert summary["replayed"] == len(moved)
    assert 0 < len(moved) < total, "the interrupt came too late to test anything"
    assert process.returncode == 1


async def _at_least(channel: AbstractChannel, queue: str, count: int) -> bool:
    return await queue_depth(channel, queue) >= count
