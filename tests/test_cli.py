"""The event-gateway command: exit codes, one-line errors, hash-token, topology, serve."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aio_pika
import pytest

from gateway.auth import hash_token
from tests.broker import AMQP_URL, delete_everything, unique_prefix
from tests.conftest import FIXTURES
from tests.processes import wait_ready
from tests.tcp_proxy import free_port

CLI = [sys.executable, "-m", "gateway.cli"]


def run_cli(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_hash_token_strips_one_newline() -> None:
    """hash-token prints sha256:<hex> of stdin minus one trailing newline."""
    result = run_cli("hash-token", stdin="test\n")
    assert result.returncode == 0
    assert result.stdout.strip() == "sha256:" + hashlib.sha256(b"test").hexdigest()
    result = run_cli("hash-token", stdin="test\n\n")
    assert result.stdout.strip() == "sha256:" + hashlib.sha256(b"test\n").hexdigest()


def test_hash_token_generate_prints_token_and_its_digest() -> None:
    """--generate prints a new token, then the digest of exactly that token."""
    result = run_cli("hash-token", "--generate")
    token, digest = result.stdout.splitlines()
    assert len(token) >= 32
    assert digest == "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def test_hash_token_without_input_is_exit_2() -> None:
    """An empty stdin is a usage error with one line on stderr."""
    result = run_cli("hash-token", stdin="")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        ("serve", "--config", "/nonexistent/gateway.toml"),
        ("topology", "--config", "/nonexistent/gateway.toml"),
        ("frobnicate",),
        ("serve", "--port", "eighty"),
    ],
)
def test_usage_and_config_errors_are_one_line_exit_2(args: tuple[str, ...]) -> None:
    """A bad command or config exits 2 with one line on stderr and no traceback."""
    result = run_cli(*args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_bad_adapter_in_config_is_exit_2(tmp_path: Path) -> None:
    """An unknown adapter is named in the one-line error."""
    config = tmp_path / "g.toml"
    config.write_text('[[sources]]\nname = "x"\nadapter = "smtp"\n')
    result = run_cli("serve", "--config", str(config))
    assert result.returncode == 2
    assert "adapter 'smtp' is unknown" in result.stderr


async def test_topology_declares_everything_idempotently(tmp_path: Path) -> None:
    """topology declares exchanges and built-in queues; running it twice is fine."""
    prefix = unique_prefix()
    config = tmp_path / "g.toml"
    config.write_text(f'[amqp]\nurl = "{AMQP_URL}"\nexchange = "{prefix}"\n')
    try:
        for _ in range(2):
            result = await asyncio.to_thread(run_cli, "topology", "--config", str(config))
            assert result.returncode == 0, result.stderr
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            for queue in ("roaming", "reachability", "sms", "unrouted", "rejected", "roaming.dlq"):
                await channel.declare_queue(f"{prefix}.{queue}", passive=True)
    finally:
        await delete_everything(prefix)


def test_serve_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    """serve comes up ready, answers /healthz, and exits 0 on SIGTERM."""
    prefix, port, config = _config(tmp_path, "")
    process = subprocess.Popen([*CLI, "serve", "--config", str(config)], stdout=subprocess.DEVNULL)
    try:
        assert wait_ready(port, 20), "serve never became ready"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            assert response.status == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
        asyncio.run(delete_everything(prefix))


def test_run_serves_and_processes_in_one_process(tmp_path: Path) -> None:
    """run: ready once the workers consume; a callback reaches the state; SIGTERM exits 0."""
    prefix, port, config = _config(
        tmp_path,
        f'[state]\nurl = "sqlite:///{tmp_path / "state.db"}"\n'
        f'[[sources]]\nname = "camara"\nadapter = "camara"\n'
        f'tokens = ["{hash_token("run-token")}"]\n',
    )
    process = subprocess.Popen([*CLI, "run", "--config", str(config)], stdout=subprocess.DEVNULL)
    try:
        assert wait_ready(port, 30), "run never became ready"
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/callbacks/camara",
            data=(FIXTURES / "camara-roaming-status.json").read_bytes(),
            headers={
                "Authorization": "Bearer run-token",
                "Content-Type": "application/cloudevents+json",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - http URL built here
            assert response.status == 204
        deadline = time.monotonic() + 15
        state = run_cli("state", "device", "+123456789", "--config", str(config))
        while state.returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.2)  # deadline poll: the worker commits asynchronously
            state = run_cli("state", "device", "+123456789", "--config", str(config))
        assert state.returncode == 0, state.stderr
        assert json.loads(state.stdout)["roaming"] is True
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert "gateway_worker_deliveries_total" in metrics
        assert "gateway_requests_total" in metrics
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        asyncio.run(delete_everything(prefix))


def _config(tmp_path: Path, extra: str) -> tuple[str, int, Path]:
    """A config on a free port and a unique exchange prefix: (prefix, port, path)."""
    prefix, port = unique_prefix(), free_port()
    config = tmp_path / "g.toml"
    config.write_text(
        f'[http]\nhost = "127.0.0.1"\nport = {port}\n[amqp]\nurl = "{AMQP_URL}"\n'
        f'exchange = "{prefix}"\n{extra}'
    )
    return prefix, port, config
