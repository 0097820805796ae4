"""``event-gateway dlq list|replay``: dead letters listed without being taken, moved back to
their work queue confirm-then-ack, on the real broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consumers import Event
from consumers.dlq import work_queue
from consumers.lenient_frames import UNDECODABLE_HEADER
from consumers.retry import ATTEMPTS_HEADER, ERROR_HEADER
from consumers.worker import WorkerSpec
from gateway.settings import AmqpSettings, Settings
from gateway.topology import declare_worker_queue, dlq_name
from tests.queue_tools_support import (
    dead_letter,
    fill,
    json_lines,
    message_ids,
    publish_poison,
    run_cli_on_a_terminal,
    run_shell,
)
from tests.worker_support import (
    EVENT_GATEWAY,
    Broker,
    as_received,
    delivered,
    drain_queue,
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


async def work_queue_with_dead_letters(env: Broker, count: int) -> tuple[Settings, str]:
    """A work queue (and its DLQ) with ``count`` dead letters ``d-0``... put there directly."""
    settings = make_settings(env.prefix)
    queue = env.track(f"{env.prefix}.roaming", settings)
    await declare_worker_queue(
        await env.channel(), settings.amqp, settings.workers, queue, (BINDING,)
    )
    await fill(dlq_name(queue), (dead_letter(n) for n in range(count)))
    return settings, queue


def test_work_queue_accepts_short_full_and_dlq_names() -> None:
    """``roaming``, ``events.roaming`` and ``events.roaming.dlq`` all mean events.roaming."""
    amqp = AmqpSettings(exchange="events")
    names = {work_queue(amqp, n) for n in ("roaming", "events.roaming", "events.roaming.dlq")}
    assert names == {"events.roaming"}


@pytest.mark.slow
async def test_list_prints_the_contract_line_and_takes_nothing(env: Broker, tmp_path: Path) -> None:
    """Each dead letter is one line {message_id, type, x-gateway-error, x-gateway-attempts,
    event}, oldest first; listing twice shows the same; the DLQ keeps every message."""
    settings, queue = await dead_letter_three(env)
    config = str(write_config(tmp_path, settings))
    first = run_cli("dlq", "list", "roaming", "--config", config)
    assert first.returncode == 0, first.stderr
    lines = json_lines(first)
    assert [line["message_id"] for line in lines] == ["d-0", "d-1", "d-2"]
    for line in lines:
        assert set(line) == {"message_id", "type", ERROR_HEADER, ATTEMPTS_HEADER, "event"}
        assert line["type"] == fixture("camara-roaming-on")["type"]
        assert line[ERROR_HEADER] == f"RuntimeError: cannot handle {line['message_id']}"
        assert line[ATTEMPTS_HEADER] == 2
        assert line["event"]["id"] == line["message_id"]
    second = run_cli("dlq", "list", queue, "--config", config)
    assert json_lines(second) == lines
    assert await queue_depth(await env.channel(), dlq_name(queue)) == 3


@pytest.mark.slow
async def test_list_limit_stops_early_and_keeps_the_order(env: Broker, tmp_path: Path) -> None:
    """``--limit 2`` prints the two oldest; the queue is then listed whole, in order."""
    settings, _ = await work_queue_with_dead_letters(env, 5)
    config = str(write_config(tmp_path, settings))
    limited = run_cli("dlq", "list", "roaming", "--limit", "2", "--config", config)
    assert [line["message_id"] for line in json_lines(limited)] == ["d-0", "d-1"]
    whole = run_cli("dlq", "list", "roaming", "--config", config)
    assert [line["message_id"] for line in json_lines(whole)] == [f"d-{n}" for n in range(5)]


@pytest.mark.slow
async def test_a_poison_header_message_is_listed_and_replayed(env: Broker, tmp_path: Path) -> None:
    """A dead letter with a header name that is not UTF-8, an impossible timestamp and a body
    that is not JSON is listed (with what was repaired) next to the others, and replays."""
    settings, queue = await work_queue_with_dead_letters(env, 1)
    await publish_poison(dlq_name(queue))
    await fill(dlq_name(queue), [dead_letter(2)])
    config = str(write_config(tmp_path, settings))
    listed = run_cli("dlq", "list", "roaming", "--config", config)
    assert listed.returncode == 0, listed.stderr
    assert "Traceback" not in listed.stderr
    lines = json_lines(listed)
    assert [line["message_id"] for line in lines] == ["d-0", "poison-1", "d-2"]
    poison = lines[1]
    assert poison["event"] is None
    assert poison["malformed"].startswith("the body is not JSON")
    assert "body_base64" in poison
    assert UNDECODABLE_HEADER in poison
    replayed = run_cli("dlq", "replay", "roaming", "--config", config)
    assert replayed.returncode == 0, replayed.stderr
    assert json_lines(replayed)[-1] == {"replayed": 3, "failed": 0}
    assert await message_ids(queue) == ["d-0", "poison-1", "d-2"]


@pytest.mark.slow
async def test_list_under_head_ends_quietly(env: Broker, tmp_path: Path) -> None:
    """``dlq list | head -3`` on 5,000 dead letters: three lines, no traceback, exit 0, soon;
    the DLQ still holds all of them, in order."""
    settings, queue = await work_queue_with_dead_letters(env, 5000)
    config = str(write_config(tmp_path, settings))
    pipeline = run_shell(
        f'"{EVENT_GATEWAY}" dlq list roaming --config "{config}" | head -3; '
        'echo "exit=${PIPESTATUS[0]}" >&2'
    )
    assert [line["message_id"] for line in json_lines(pipeline)] == ["d-0", "d-1", "d-2"]
    assert pipeline.stderr.strip() == "exit=0"
    assert await queue_depth(await env.channel(), dlq_name(queue)) == 5000
    listed = run_cli("dlq", "list", "roaming", "--limit", "5", "--config", config)
    assert [line["message_id"] for line in json_lines(listed)] == [f"d-{n}" for n in range(5)]


@pytest.mark.slow
async def test_replay_moves_messages_back_with_attempts_reset(env: Broker, tmp_path: Path) -> None:
    """Replay empties the DLQ into the work queue without the attempts and error headers and
    ends with {"replayed": 3, "failed": 0}, exit 0."""
    settings, queue = await dead_letter_three(env)
    config = str(write_config(tmp_path, settings))
    replayed = run_cli("dlq", "replay", "roaming", "--config", config)
    assert replayed.returncode == 0, replayed.stderr
    assert json_lines(replayed) == [{"replayed": 3, "failed": 0}]
    channel = await env.channel()
    assert await queue_depth(channel, dlq_name(queue)) == 0
    moved = await drain_queue(channel, queue)
    assert [m.message_id for m in moved] == ["d-0", "d-1", "d-2"]
    for message in moved:
        assert ATTEMPTS_HEADER not in (message.headers or {})
        assert ERROR_HEADER not in (message.headers or {})


@pytest.mark.slow
async def test_dry_run_and_limit(env: Broker, tmp_path: Path) -> None:
    """``--dry-run`` says what would move and moves nothing; ``--limit 2`` moves the two
    oldest."""
    settings, queue = await work_queue_with_dead_letters(env, 4)
    config = str(write_config(tmp_path, settings))
    dry = run_cli("dlq", "replay", "roaming", "--dry-run", "--config", config)
    assert dry.returncode == 0, dry.stderr
    lines = json_lines(dry)
    assert [line["message_id"] for line in lines[:-1]] == [f"d-{n}" for n in range(4)]
    assert all(line["to"] == queue and line["replays"] for line in lines[:-1])
    assert lines[-1] == {"replayed": 4, "failed": 0, "dry_run": True}
    channel = await env.channel()
    assert await queue_depth(channel, dlq_name(queue)) == 4
    assert await queue_depth(channel, queue) == 0
    limited = run_cli("dlq", "replay", "roaming", "--limit", "2", "--config", config)
    assert json_lines(limited) == [{"replayed": 2, "failed": 0}]
    assert await message_ids(queue) == ["d-0", "d-1"]
    assert await message_ids(dlq_name(queue)) == ["d-2", "d-3"]


@pytest.mark.slow
async def test_progress_bar_only_on_a_terminal(env: Broker, tmp_path: Path) -> None:
    """With stderr on a terminal, replay draws a progress bar there (stdout still just the
    summary); with stderr a pipe, stderr stays empty."""
    settings, _ = await work_queue_with_dead_letters(env, 300)
    config = str(write_config(tmp_path, settings))
    code, stdout, terminal = run_cli_on_a_terminal(
        "dlq", "replay", "roaming", "--limit", "150", "--config", config
    )
    assert code == 0, terminal
    assert [json.loads(line) for line in stdout.splitlines()] == [{"replayed": 150, "failed": 0}]
    assert "150/150" in terminal
    assert "msg" in terminal
    piped = run_cli("dlq", "replay", "roaming", "--config", config)
    assert json_lines(piped) == [{"replayed": 150, "failed": 0}]
    assert piped.stderr == ""


@pytest.mark.slow
async def test_a_refused_copy_leaves_the_message_in_the_dlq(env: Broker, tmp_path: Path) -> None:
    """When the work queue refuses the copies (full, reject-publish), the dead letters stay
    where they are, the summary counts them failed and the exit status is 1."""
    settings = make_settings(env.prefix, queue_type="classic")
    queue = f"{env.prefix}.billing"
    env.extra_queues.update({queue, dlq_name(queue)})
    channel = await env.channel()
    await channel.declare_queue(
        queue, durable=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
    )
    await channel.declare_queue(dlq_name(queue), durable=True)
    await fill(dlq_name(queue), (dead_letter(n) for n in range(3)))
    config = str(write_config(tmp_path, settings))
    replayed = run_cli("dlq", "replay", "billing", "--config", config)
    assert replayed.returncode == 1
    assert json_lines(replayed) == [{"replayed": 1, "failed": 2}]
    assert await message_ids(queue) == ["d-0"]
    assert sorted(await message_ids(dlq_name(queue))) == ["d-1", "d-2"]


@pytest.mark.slow
async def test_errors_are_one_line(env: Broker, tmp_path: Path) -> None:
    """An unknown queue is one line and exit 1; a usage error one line and exit 2."""
    config = str(write_config(tmp_path, make_settings(env.prefix)))
    missing = run_cli("dlq", "list", "nothing-here", "--config", config)
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1
    assert "does not exist" in missing.stderr
    replay_missing = run_cli("dlq", "replay", "nothing-here", "--config", config)
    assert replay_missing.returncode == 1
    assert replay_missing.stderr.count("\n") == 1
    usage = run_cli("dlq", "replay", "roaming", "--limit", "0", "--config", config)
    assert usage.returncode == 2
    assert usage.stderr.count("\n") == 1
    assert "Traceback" not in missing.stderr + replay_missing.stderr + usage.stderr
