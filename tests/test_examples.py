"""examples/ runs as its docstring says: `event-gateway consume --handler` with PYTHONPATH."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path

import pytest

from gateway.topology import dlq_name
from tests.worker_support import (
    ROOT,
    Broker,
    as_received,
    consumers_on,
    eventually,
    make_settings,
    notify_status,
    publish_events,
    queue_depth,
    start_cli,
    with_changes,
    write_config,
)

EXAMPLES = ROOT / "examples"


def test_the_example_documents_the_command_this_test_runs() -> None:
    """The example's docstring gives the exact consume command exercised below."""
    text = (EXAMPLES / "failed_sms.py").read_text(encoding="utf-8")
    assert "PYTHONPATH=examples event-gateway consume --queue failed-sms" in text
    assert "--bind 'notify.sms.delivery-status' --handler failed_sms:handle" in text


@pytest.mark.slow
async def test_failed_sms_example_runs_under_consume(env: Broker, tmp_path: Path) -> None:
    """The failed-SMS handler, loaded by `consume --handler failed_sms:handle`, writes one line
    per failed SMS (a resent receipt once), skips delivered ones, and dead-letters a body that
    is no receipt."""
    settings = make_settings(env.prefix)
    queue = env.track(f"{env.prefix}.failed-sms", settings)
    output = tmp_path / "failed.jsonl"
    process = start_cli(
        "consume", "--queue", "failed-sms", "--bind", "notify.sms.delivery-status",
        "--handler", "failed_sms:handle", "--config", str(write_config(tmp_path, settings)),
        PYTHONPATH=str(EXAMPLES), FAILED_SMS_FILE=str(output),
    )  # fmt: skip
    try:

        async def consuming() -> bool:
            assert process.poll() is None, process.communicate()
            return await consumers_on(await env.channel(), queue) >= 1  # a 404 closes a channel

        await eventually(consuming, what="a consumer on the example's queue")
        failed = notify_status("n-1", "permanent-failure", "2026-11-30T10:00:00Z", None)
        events = [
            failed,
            notify_status("n-2", "delivered", "2026-11-30T10:00:00Z", "2026-11-30T10:00:05Z"),
            failed,  # resent: written once
            with_changes(failed, id="bad:1", data="not a receipt"),
        ]
        channel = await env.channel()
        await publish_events(channel, settings, [as_received(e) for e in events])

        async def settled() -> bool:
            return (
                await queue_depth(channel, dlq_name(queue)) == 1
                and await queue_depth(channel, queue) == 0
                and output.exists()
            )

        await eventually(settled, what="every event handled")
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.to_thread(process.communicate, timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    written = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert written == [
        {
            "event_id": "n-1:permanent-failure",
            "notify_id": "n-1",
            "reference": "ref-1",
            "status": "permanent-failure",
            "time": "2026-11-30T10:00:00+00:00",
        }
    ]
    assert "+61412345678" not in output.read_text(encoding="utf-8")


def test_the_example_is_plain_python_without_the_gateway_running() -> None:
    """The example imports with nothing but the package installed (no side effects)."""
    result = subprocess.run(
        ["python", "-c", "import failed_sms; print(failed_sms.handle.__name__)"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=EXAMPLES,
        env={"PATH": str(ROOT / ".venv" / "bin")},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "handle"
