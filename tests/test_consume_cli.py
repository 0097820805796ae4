"""``event-gateway consume`` and ``state`` as processes: custom handlers, draining on SIGTERM,
a forced exit on the second signal, nothing lost after SIGKILL, usage errors."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from consumers import Event
from consumers.handlers import roaming
from consumers.state import open_store
from gateway.settings import Settings
from gateway.topology import dlq_name
from tests.tcp_proxy import free_port
from tests.worker_support import (
    Broker,
    as_received,
    consumers_on,
    eventually,
    fixture,
    make_settings,
    notify_status,
    publish_events,
    queue_depth,
    run_cli,
    sqlite_url,
    start_cli,
    with_changes,
    write_config,
)

ROAMING = "org.camaraproject.device-roaming-status-subscriptions.v0."


async def wait_consuming(env: Broker, queue: str, process: subprocess.Popen[str]) -> None:
    """Wait until the worker process consumes ``queue`` (fail early if it died)."""

    async def check() -> bool:
        assert process.poll() is None, process.communicate()
        return await consumers_on(await env.channel(), queue) >= 1

    await eventually(check, what=f"a consumer on {queue}")


async def wait_exit(process: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str, str]:
    """Wait for the process without blocking the event loop; (returncode, stdout, stderr)."""
    stdout, stderr = await asyncio.to_thread(process.communicate, timeout=timeout)
    return process.returncode, stdout, stderr


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.communicate()


def custom(settings: Settings, env: Broker, name: str) -> str:
    return env.track(f"{env.prefix}.{name}", settings)


@pytest.mark.slow
async def test_custom_handler_sees_exactly_the_events_its_bindings_select(
    env: Broker, tmp_path: Path
) -> None:
    """--handler module:function gets every event its --bind patterns select, and no other."""
    settings = make_settings(env.prefix)
    queue = custom(settings, env, "mine")
    log = tmp_path / "seen.txt"
    process = start_cli(
        "consume", "--queue", "mine", "--bind", ROAMING + "roaming-on",
        "--bind", "notify.*.delivery-status", "--handler", "tests.custom_handler:record",
        "--config", str(write_config(tmp_path, settings)), CUSTOM_HANDLER_LOG=str(log),
    )  # fmt: skip
    try:
        await wait_consuming(env, queue, process)
        sms = notify_status("n-1", "delivered", "2017-05-14T12:15:30Z", None)
        email = with_changes(sms, id="n-2:delivered", type="notify.email.delivery-status")
        events = [
            with_changes(fixture("camara-roaming-on"), id="on"),
            with_changes(fixture("camara-roaming-off"), id="off"),
            sms,
            email,
            with_changes(sms, id="in-1", type="notify.sms.inbound"),
            fixture("camara-qod-status-changed"),
        ]
        channel = await env.channel()
        await publish_events(channel, settings, [as_received(e) for e in events])

        async def three_seen_and_queue_empty() -> bool:
            return len(lines(log)) == 3 and await queue_depth(channel, queue) == 0

        await eventually(three_seen_and_queue_empty, what="three events handled")
        process.send_signal(signal.SIGTERM)
        code, _stdout, stderr = await wait_exit(process)
    finally:
        stop(process)
    assert code == 0, stderr
    assert sorted(lines(log)) == sorted(
        [
            f"on {ROAMING}roaming-on",
            "n-1:delivered notify.sms.delivery-status",
            "n-2:delivered notify.email.delivery-status",
        ]
    )


@pytest.mark.slow
async def test_sigterm_stops_intake_drains_in_flight_and_exits_zero(
    env: Broker, tmp_path: Path
) -> None:
    """On SIGTERM the handlers in flight finish and are acked; the rest stay queued; exit 0."""
    settings = make_settings(env.prefix)
    queue = custom(settings, env, "slow")
    log = tmp_path / "slow.txt"
    process = start_cli(
        "consume", "--queue", queue, "--bind", ROAMING + "*", "--handler",
        "tests.custom_handler:slow", "--concurrency", "4",
        "--config", str(write_config(tmp_path, settings)),
        CUSTOM_HANDLER_LOG=str(log), CUSTOM_HANDLER_SECONDS="0.5",
    )  # fmt: skip
    try:
        await wait_consuming(env, queue, process)
        channel = await env.channel()
        events = [with_changes(fixture("camara-roaming-on"), id=f"s-{n}") for n in range(12)]
        await publish_events(channel, settings, [as_received(e) for e in events])
        await eventually(lambda: len(lines(log)) >= 4, what="four handlers started")
        process.send_signal(signal.SIGTERM)
        code, stdout, stderr = await wait_exit(process)
    finally:
        stop(process)
    assert code == 0, stderr
    started = {line.split()[1] for line in lines(log) if line.startswith("start ")}
    done = {line.split()[1] for line in lines(log) if line.startswith("done ")}
    assert started == done
    assert 4 <= len(done) < 12
    assert await queue_depth(channel, queue) == 12 - len(done)
    assert await queue_depth(channel, dlq_name(queue)) == 0
    logged = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert [e["event"] for e in logged if e["event"].startswith("worker")][-2:] == [
        "worker stopping intake",
        "worker stopped",
    ]
    assert all("event_id" in e for e in logged if e["event"] == "delivery")


@pytest.mark.slow
async def test_second_signal_forces_exit_and_leaves_the_message_queued(
    env: Broker, tmp_path: Path
) -> None:
    """A second signal during the drain cancels the handler at once: exit 1, nothing acked."""
    settings = make_settings(env.prefix, drain_timeout_s=60.0)
    queue = custom(settings, env, "stuck")
    log, output = tmp_path / "stuck.txt", tmp_path / "stdout.txt"
    process = start_cli(
        "consume", "--queue", queue, "--bind", ROAMING + "*", "--handler",
        "tests.custom_handler:slow", "--config", str(write_config(tmp_path, settings)),
        output=output, CUSTOM_HANDLER_LOG=str(log), CUSTOM_HANDLER_SECONDS="120",
    )  # fmt: skip
    try:
        await wait_consuming(env, queue, process)
        channel = await env.channel()
        await publish_events(channel, settings, [as_received(fixture("camara-roaming-on"))])
        await eventually(lambda: len(lines(log)) == 1, what="handler started")
        process.send_signal(signal.SIGTERM)

        # (A quorum queue still counts a cancelled consumer while it holds unacked messages,
        # so the worker's own log line says when the first signal has been handled.)
        await eventually(
            lambda: "worker stopping intake" in output.read_text(encoding="utf-8"),
            what="intake stopped",
        )
        process.send_signal(signal.SIGINT)
        code, _stdout, stderr = await wait_exit(process, timeout=15)
    finally:
        stop(process)
    assert code == 1, stderr
    assert lines(log) == ["start 123656"]

    async def back_in_queue() -> bool:
        return await queue_depth(channel, queue) == 1

    await eventually(back_in_queue, what="message requeued")


@pytest.mark.slow
async def test_sigkill_mid_batch_then_a_fresh_worker_loses_nothing(
    env: Broker, tmp_path: Path
) -> None:
    """Killed mid-batch, the next (built-in) worker applies the rest: each event once, none lost."""
    state_url = sqlite_url(tmp_path)
    settings = make_settings(env.prefix, state_url)
    config = str(write_config(tmp_path, settings))
    queue = env.track(f"{env.prefix}.sms", settings)
    log = tmp_path / "sms.txt"
    killed = start_cli(
        "consume", "--queue", "sms", "--bind", "notify.sms.*", "--handler",
        "tests.custom_handler:slow_sms", "--concurrency", "4", "--config", config,
        CUSTOM_HANDLER_LOG=str(log), CUSTOM_HANDLER_STATE=state_url,
        CUSTOM_HANDLER_SECONDS="0.1",
    )  # fmt: skip
    count = 60
    events = [
        notify_status(f"m-{n}", "delivered", "2017-05-14T12:15:30Z", "2017-05-14T12:16:00Z")
        for n in range(count)
    ]
    fresh: subprocess.Popen[str] | None = None
    try:
        await wait_consuming(env, queue, killed)
        channel = await env.channel()
        await publish_events(channel, settings, [as_received(e) for e in events])
        await eventually(lambda: len(lines(log)) >= 8, what="some events applied")
        killed.kill()
        await wait_exit(killed)
        applied_before_kill = len(lines(log))
        assert applied_before_kill < count

        port = free_port()
        fresh = start_cli("consume", "sms", "--config", config, "--metrics-port", str(port))
        await wait_consuming(env, queue, fresh)
        store = await open_store(state_url)
        try:

            async def all_applied() -> bool:
                found = [await store.message(f"m-{n}") for n in range(count)]
                return all(found) and await queue_depth(channel, queue) == 0

            await eventually(all_applied, what="every message in the state store")
            for n in range(count):
                message: dict[str, Any] | None = await store.message(f"m-{n}")
                assert message is not None
                assert [h["event_id"] for h in message["history"]] == [f"m-{n}:delivered"]
        finally:
            await store.close()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                metrics = await response.text()
        ok = f'gateway_worker_deliveries_total{{outcome="ok",queue="{queue}"}}'
        assert ok in metrics
        fresh.send_signal(signal.SIGTERM)
        code, _stdout, stderr = await wait_exit(fresh)
        assert code == 0, stderr
        assert await queue_depth(channel, dlq_name(queue)) == 0
    finally:
        stop(killed)
        if fresh is not None:
            stop(fresh)


@pytest.mark.slow
async def test_state_prints_one_json_object_or_fails_with_one_line(tmp_path: Path) -> None:
    """``state device KEY`` prints the device as JSON; an unknown key is exit 1, one line."""
    settings = make_settings("t-state", sqlite_url(tmp_path))
    store = await open_store(settings.state.url)
    try:
        await roaming.make_handler(store)(Event.from_dict(fixture("camara-roaming-change-country")))
        expected = await store.device("+123456789")
    finally:
        await store.close()
    config = str(write_config(tmp_path, settings))
    found, missing = await asyncio.gather(
        asyncio.to_thread(run_cli, "state", "device", "+123456789", "--config", config),
        asyncio.to_thread(run_cli, "state", "subscription", "nope", "--config", config),
    )
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout.splitlines()[-1]) == expected
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1
    assert "nope" in missing.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["consume"],
        ["consume", "roaming", "--handler", "tests.custom_handler:record"],
        ["consume", "--queue", "q", "--bind", "x.*"],
        ["consume", "--queue", "q", "--bind", " ", "--handler", "tests.custom_handler:record"],
        ["consume", "--queue", "q", "--bind", "x.*", "--handler", "tests.nope:fn"],
        ["consume", "--queue", "q", "--bind", "x.*", "--handler", "tests.custom_handler:NOT"],
        ["consume", "--queue", "q", "--bind", "x.*", "--handler", "tests.custom_handler:not_async"],
        ["consume", "roaming", "--concurrency", "0"],
        ["consume", "roaming", "--metrics-port", "70000"],
        ["consume", "teleport"],
        ["state", "planet", "earth"],
        ["dlq", "purge", "roaming"],
    ],
)  # fmt: skip
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad usage: exit 2 and one line on stderr, from argparse or from the command itself."""
    from gateway.cli import build_parser

    try:
        args = build_parser().parse_args(argv)
        code = args.func(args, make_settings("t-usage"))
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.slow
def test_config_error_is_exit_2_without_traceback(tmp_path: Path) -> None:
    """A missing config file: the process prints one line and exits 2."""
    result = run_cli("consume", "roaming", "--config", str(tmp_path / "missing.toml"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "missing.toml" in result.stderr
