"""A worker SIGKILLed mid-batch loses nothing (contract §10): its unacked messages come back
and a fresh worker leaves PostgreSQL exactly as one worker that never died would. Real
``event-gateway consume`` processes, the real broker and PostgreSQL."""

from __future__ import annotations

import random
import signal
from pathlib import Path
from typing import Any

import pytest

from consumers.handlers import builtin_spec
from consumers.state import open_store
from gateway.topology import declare_worker_queue, dlq_name
from tests.worker_support import (
    Broker,
    as_received,
    eventually,
    make_settings,
    notify_status,
    publish_events,
    queue_depth,
    run_until_settled,
    sqlite_url,
    start_cli,
    write_config,
)

pytestmark = pytest.mark.slow

MESSAGES = 1000
PREFETCH = 64
# Each message gets these receipts, in shuffled order: the final state depends on the
# precedence rules (a final status is never moved back), not on delivery order.
RECEIPTS = (
    ("sending", "2017-05-14T12:15:31Z"),
    ("delivered", "2017-05-14T12:15:35Z"),
    ("pending", "2017-05-14T12:15:33Z"),
    ("temporary-failure", "2017-05-14T12:15:34Z"),
)


def _events() -> list[dict[str, Any]]:
    events = [
        as_received(notify_status(f"k-{n}", status, "2017-05-14T12:15:30Z", time))
        for n in range(MESSAGES)
        for status, time in RECEIPTS
    ]
    random.Random(7).shuffle(events)
    return events


async def test_sigkill_mid_batch_loses_nothing_and_ends_in_the_same_state(
    env: Broker, tmp_path: Path, postgres_url: str
) -> None:
    """SIGKILL while batches are in flight; a fresh worker finishes; every message's state in
    PostgreSQL equals what one worker that never died leaves; nothing dead-lettered."""
    settings = make_settings(env.prefix, postgres_url, prefetch=PREFETCH)
    spec = builtin_spec(settings.amqp, "sms")
    env.track(spec.queue, settings)
    config = str(write_config(tmp_path, settings))
    channel = await env.channel()
    events = _events()
    store = await open_store(postgres_url)
    # A backlog first, so the worker is killed with batches in flight and work left.
    await declare_worker_queue(channel, settings.amqp, settings.workers, spec.queue, spec.bindings)
    await publish_events(channel, settings, events)
    killed = start_cli("consume", "sms", "--config", config, output=tmp_path / "killed.log")
    fresh = None
    try:

        async def some_acked() -> bool:
            assert killed.poll() is None, killed.communicate()
            # The worker holds at most ``prefetch`` unacked: fewer ready than that below the
            # total means it has applied and acked some, and is at work on the next batches.
            return await queue_depth(channel, spec.queue) < len(events) - 3 * PREFETCH

        await eventually(some_acked, what="some receipts applied")
        killed.send_signal(signal.SIGKILL)
        killed.communicate(timeout=10)
        assert await queue_depth(channel, spec.queue) > 0, "killed too late: nothing left"

        fresh = start_cli("consume", "sms", "--config", config, output=tmp_path / "fresh.log")

        async def all_settled() -> bool:
            assert fresh is not None
            assert fresh.poll() is None, fresh.communicate()
            declared = await channel.declare_queue(spec.queue, passive=True)
            result = declared.declaration_result
            if result.message_count:
                return False
            found = [await store.message(f"k-{n}") for n in range(MESSAGES)]
            return all(m is not None and len(m["history"]) == len(RECEIPTS) for m in found)

        await eventually(all_settled, deadline_s=60, what="every receipt applied")
        fresh.send_signal(signal.SIGTERM)
        fresh.communicate(timeout=30)
        assert fresh.returncode == 0
        after_kill = {n: await store.message(f"k-{n}") for n in range(MESSAGES)}
    finally:
        await store.close()
        for process in (killed, fresh):
            if process is not None and process.poll() is None:
                process.kill()
                process.communicate()
    assert await queue_depth(channel, dlq_name(spec.queue)) == 0

    # The same events through one worker that never died (in this process, SQLite).
    reference_settings = make_settings(env.prefix, sqlite_url(tmp_path), prefetch=PREFETCH)
    await run_until_settled(reference_settings, spec, channel, events)
    reference = await open_store(reference_settings.state.url)
    try:
        for n in range(MESSAGES):
            assert after_kill[n] == await reference.message(f"k-{n}"), n
    finally:
        await reference.close()
