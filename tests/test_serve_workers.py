"""``serve --workers N``: several ingress processes on one port, one supervisor."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import aiohttp
import pytest

from gateway.auth import hash_token
from gateway.supervisor import child_argv, worker_count
from tests.broker import AMQP_URL, delete_everything, unique_prefix
from tests.processes import GatewayProcess, wait_http_ready
from tests.tcp_proxy import free_port

TOKEN = "workers-test-token"
EVENT = {
    "specversion": "1.0",
    "id": "w-1",
    "source": "/test",
    "type": "org.camaraproject.device-roaming-status-subscriptions.v0.roaming-on",
    "time": "2026-11-30T10:00:00Z",
    "data": {"device": {"phoneNumber": "+36721601234567"}, "roaming": True},
}


def test_worker_count_parses_numbers_and_auto() -> None:
    """``--workers`` takes a positive number or ``auto`` (the CPUs this process may use)."""
    assert worker_count("3") == 3
    assert worker_count("auto") == len(os.sched_getaffinity(0))
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(ValueError, match="--workers"):
            worker_count(bad)


def test_child_argv_drops_workers_and_adds_the_slot() -> None:
    """Each child is the same ``serve`` without ``--workers``, with its slot and directory."""
    argv = child_argv(["serve", "--workers", "2", "--config", "c.toml", "--workers=3"], 1, "/d")
    assert argv[3:] == [
        "serve",
        "--config",
        "c.toml",
        "--process-slot",
        "1",
        "--process-dir",
        "/d",
        "--process-supervisor",
        str(os.getpid()),
    ]


@pytest.fixture
async def config(tmp_path: Path) -> AsyncIterator[tuple[Path, str, int]]:
    prefix = unique_prefix()
    port = free_port()
    path = tmp_path / "gateway.toml"
    path.write_text(
        f"""
[http]
host = "127.0.0.1"
port = {port}
[amqp]
url = {json.dumps(AMQP_URL)}
exchange = "{prefix}"
queue_type = "classic"
[[sources]]
name = "camara"
adapter = "camara"
tokens = ["{hash_token(TOKEN)}"]
""",
        encoding="utf-8",
    )
    yield path, prefix, port
    await delete_everything(prefix, extra_queues=[f"{prefix}.sink"])


async def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


async def _both_children(pid: int) -> list[int]:
    """The supervisor's two children, once both have started (a deadline poll)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while len(children := await _children(pid)) < 2:
        assert loop.time() < deadline, "the supervisor did not start two children"
        await asyncio.sleep(0.1)  # poll while the second child starts
    return children


@pytest.mark.slow
async def test_two_processes_share_the_port_and_report_every_process(
    config: tuple[Path, str, int], tmp_path: Path
) -> None:
    """Two children answer on one port, every 204 is stored, /metrics labels both processes,
    and SIGTERM stops them all with exit 0."""
    path, prefix, port = config
    proc = GatewayProcess(
        "serve-workers", ("serve", "--workers", "2", "--config", str(path)), tmp_path
    ).start()
    try:
        async with aiohttp.ClientSession() as session:
            await wait_http_ready(session, proc, port, timeout=30)
            await _both_children(proc.pid)
            loop = asyncio.get_running_loop()
            connection = await aio_pika.connect(AMQP_URL)
            async with connection:
                channel = await connection.channel()
                sink = await channel.declare_queue(f"{prefix}.sink", auto_delete=False)
                exchange = await channel.get_exchange(prefix)
                await sink.bind(exchange, "#")

                async def post(i: int) -> int:
                    body = json.dumps({**EVENT, "id": f"w-{i}"})
                    async with (
                        aiohttp.ClientSession() as own,  # a connection of its own
                        own.post(
                            f"http://127.0.0.1:{port}/callbacks/camara",
                            data=body,
                            headers={
                                "Authorization": f"Bearer {TOKEN}",
                                "Content-Type": "application/cloudevents+json",
                            },
                        ) as response,
                    ):
                        return response.status

                statuses = await asyncio.gather(*(post(i) for i in range(200)))
                assert statuses.count(204) == 200
                deadline = loop.time() + 10
                while (
                    await channel.declare_queue(sink.name, passive=True)
                ).declaration_result.message_count < 200:
                    assert loop.time() < deadline, "not every 2xx-answered event was stored"
                    await asyncio.sleep(0.05)  # poll the broker's count
            deadline = loop.time() + 30
            while True:
                async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                    text = await response.text()
                processes = set(re.findall(r'event_gateway_build_info\{[^}]*process="(\d)"', text))
                served = re.findall(r'gateway_requests_total\{[^}]*status="204"[^}]*\} (\S+)', text)
                total = sum(float(v) for v in served)
                if processes == {"0", "1"} and total == 200:
                    break
                assert loop.time() < deadline, (
                    f"/metrics did not show both processes and 200 answers: {processes}, {total}"
                )
                await asyncio.sleep(0.2)  # snapshots are written once a second
        assert await proc.terminate(timeout=30) == 0
    finally:
        proc.kill()


@pytest.mark.slow
async def test_children_stop_when_the_supervisor_is_killed(
    config: tuple[Path, str, int], tmp_path: Path
) -> None:
    """SIGKILL of the supervisor leaves no ingress process behind holding the port."""
    path, _prefix, port = config
    proc = GatewayProcess(
        "serve-orphans", ("serve", "--workers", "2", "--config", str(path)), tmp_path
    ).start()
    try:
        async with aiohttp.ClientSession() as session:
            await wait_http_ready(session, proc, port, timeout=30)
        children = await _both_children(proc.pid)
        loop = asyncio.get_running_loop()
    finally:
        proc.kill()
    deadline = loop.time() + 30
    while alive := [pid for pid in children if Path(f"/proc/{pid}").exists()]:
        assert loop.time() < deadline, f"ingress processes outlived their supervisor: {alive}"
        await asyncio.sleep(0.2)  # poll: each child notices within a second, then drains
