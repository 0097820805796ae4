"""``consumers.dlq`` and ``event-gateway dlq``: list dead letters without consuming them, and
replay them into the work queue."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consumers import Event
from consumers.dlq import NoSuchQueue, list_dead_letters, replay_dead_letters, work_queue
from consumers.retry import ATTEMPTS_HEADER
from consumers.worker import WorkerSpec
from gateway.settings import AmqpSettings, Settings
from gateway.topology import dlq_name
from tests.worker_support import (
    Broker,
    as_received,
    delivered,
    fixture,
    make_settings,
    queue_depth,
    run_cli,
    run_until_settled,
    with_changes,
    write_config,
)

BINDING = "org.camaraproject.device-roaming-status-subscriptions.v0.*"


async def failing(event: Event) -> None:
    raise RuntimeError(f"cannot handle {event.id}")


async def dead_letter_three(env: Broker) -> tuple[Settings, str]:
    """Three events through a worker whose handler always fails: all end in the DLQ."""
    settings = make_settings(env.prefix, max_attempts=2)
    queue = env.track(f"{env.prefix}.roaming", settings)
    spec = WorkerSpec(queue=queue, bindings=(BINDING,), handler=failing)
    events = [
        as_received(with_changes(fixture("camara-roaming-on"), id=f"d-{n}")) for n in range(3)
    ]
    metrics = await run_until_settled(settings, spec, await env.channel(), events)
    assert delivered(metrics, queue, "dead_lettered") == 3
    return settings, queue


def test_work_queue_accepts_short_full_and_dlq_names() -> None:
    """``roaming``, ``events.roaming`` and ``events.roaming.dlq`` all mean events.roaming."""
    amqp = AmqpSettings(exchange="events")
    names = {work_queue(amqp, n) for n in ("roaming", "events.roaming", "events.roaming.dlq")}
    assert names == {"events.roaming"}


async def test_list_shows_every_message_and_leaves_them_in_order(env: Broker) -> None:
    """Listing twice shows the same messages in the same order; the DLQ keeps all of them."""
    settings, queue = await dead_letter_three(env)
    first = await list_dead_letters(settings.amqp, queue)
    second = await list_dead_letters(settings.amqp, queue)
    assert [d.as_json() for d in first] == [d.as_json() for d in second]
    assert sorted(d.id or "" for d in first) == ["d-0", "d-1", "d-2"]
    for dead in first:
        assert dead.type == fixture("camara-roaming-on")["type"]
        assert dead.attempts == 2
        assert dead.error == f"RuntimeError: cannot handle {dead.id}"
    assert await queue_depth(await env.channel(), dlq_name(queue)) == 3


async def test_replay_moves_messages_back_with_attempts_reset(env: Broker) -> None:
    """Replay empties the DLQ into the work queue, without the attempts header."""
    settings, queue = await dead_letter_three(env)
    assert await replay_dead_letters(settings.amqp, queue) == 3
    channel = await env.channel()
    assert await queue_depth(channel, dlq_name(queue)) == 0
    work = await channel.declare_queue(queue, passive=True)
    replayed = [await work.get(no_ack=True) for _ in range(3)]
    assert sorted(m.message_id or "" for m in replayed) == ["d-0", "d-1", "d-2"]
    assert all(ATTEMPTS_HEADER not in (m.headers or {}) for m in replayed)


async def test_missing_queue_is_a_named_error(env: Broker) -> None:
    """A queue that does not exist raises NoSuchQueue."""
    amqp = make_settings(env.prefix).amqp
    with pytest.raises(NoSuchQueue, match="does not exist"):
        await list_dead_letters(amqp, f"{env.prefix}.nothing")


@pytest.mark.slow
async def test_dlq_cli_lists_then_replays(env: Broker, tmp_path: Path) -> None:
    """``dlq list`` prints a JSON line per message; ``dlq replay`` moves them, says how many."""
    settings, queue = await dead_letter_three(env)
    config = str(write_config(tmp_path, settings))
    listed = run_cli("dlq", "list", "roaming", "--config", config)
    assert listed.returncode == 0, listed.stderr
    lines = [json.loads(line) for line in listed.stdout.splitlines() if line.startswith('{"id"')]
    assert sorted(line["id"] for line in lines) == ["d-0", "d-1", "d-2"]
    assert all(line["attempts"] == 2 and line["error"].startswith("RuntimeError") for line in lines)
    replayed = run_cli("dlq", "replay", queue, "--config", config)
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout.splitlines()[-1]) == {"queue": queue, "replayed": 3}
    channel = await env.channel()
    assert await queue_depth(channel, dlq_name(queue)) == 0
    assert await queue_depth(channel, queue) == 3
    missing = run_cli("dlq", "list", "nothing-here", "--config", config)
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1
    assert "does not exist" in missing.stderr
