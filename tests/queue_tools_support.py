"""Shared pieces of the queue-tool tests (``rejected``, ``unrouted``, ``dlq``): filling queues
fast, reading every message id of a queue, a poison message, the CLI's JSON lines."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import struct
import subprocess
import termios
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiormq
from aiormq.abc import AbstractChannel, DeliveredMessage
from pamqp import commands

from gateway.amqp_wire import Outgoing, PublishEncoder
from gateway.confirm_stream import StreamTracker
from gateway.settings import Settings
from tests.broker import AMQP_URL
from tests.worker_support import EVENT_GATEWAY, ROOT, Broker, cli_env, eventually, write_config

Message = tuple[bytes, commands.Basic.Properties]


def dead_letter(n: int, event_type: str = "org.example.thing.v1.changed") -> Message:
    """A dead letter as a worker leaves it: the event, its error and attempts."""
    event = {"id": f"d-{n}", "source": "/callbacks/x", "type": event_type, "specversion": "1.0"}
    properties = commands.Basic.Properties(
        content_type="application/cloudevents+json",
        delivery_mode=2,
        message_id=f"d-{n}",
        message_type=event_type,
        headers={"x-gateway-error": f"RuntimeError: cannot handle d-{n}", "x-gateway-attempts": 5},
    )
    return json.dumps(event).encode(), properties


async def fill(queue: str, messages: Iterable[Message], exchange: str = "") -> int:
    """Publish ``messages`` (to ``queue`` through the default exchange, or to ``exchange``
    with routing key ``queue``), many confirms in flight; returns how many."""
    connection = await aiormq.connect(AMQP_URL)
    try:
        channel = await connection.channel(publisher_confirms=True)
        semaphore = asyncio.Semaphore(500)

        async def publish(body: bytes, properties: commands.Basic.Properties) -> None:
            async with semaphore:
                confirm = await channel.basic_publish(
                    body, exchange=exchange, routing_key=queue, properties=properties
                )
                assert isinstance(confirm, commands.Basic.Ack)

        tasks = [publish(body, properties) for body, properties in messages]
        await asyncio.gather(*tasks)
        return len(tasks)
    finally:
        await connection.close()


async def message_ids(queue: str) -> list[str]:
    """Take every message of ``queue`` (destructive) and return their ids, in order."""
    connection = await aiormq.connect(AMQP_URL)
    ids: list[str] = []
    try:
        channel = await connection.channel()
        expected = (await channel.queue_declare(queue, passive=True)).message_count or 0
        done = asyncio.Event()

        async def take(message: DeliveredMessage) -> None:
            ids.append(str(message.header.properties.message_id))
            if len(ids) >= expected:
                done.set()

        if expected:
            await channel.basic_consume(queue, take, no_ack=True)
            await asyncio.wait_for(done.wait(), 60)
    finally:
        await connection.close()
    return ids


async def publish_poison(queue: str) -> None:
    """One message whose properties pamqp cannot decode (timestamps, of the message and in a
    header, past the year 9999; RabbitMQ passes them on), a header that is not UTF-8, and a
    body that is not JSON, put in ``queue`` with raw frames."""
    streams = StreamTracker()
    connection = aiormq.Connection(AMQP_URL, transport_factory=streams)
    await connection.connect()
    try:
        channel = await connection.channel()
        entries = (
            b"\x04when" + b"T" + struct.pack(">Q", 2**63),
            b"\x04text" + b"S" + struct.pack(">I", 2) + b"\xff\xfe",
        )
        table = struct.pack(">I", sum(map(len, entries))) + b"".join(entries)
        encoder = PublishEncoder(channel.number, 65536, delivery_mode=2, app_id="test")
        poison = Outgoing("", queue, b"\x00not json\xff", "text/plain", "poison-1", "x", table)
        assert streams.writer is not None
        before = await _depth(channel, queue)
        streams.writer.write(encoder.encode(poison, 2**63))
        await streams.writer.drain()
        await eventually(
            lambda: _deeper(channel, queue, before), what="the poison message in the queue"
        )
    finally:
        await connection.close()


async def _depth(channel: AbstractChannel, queue: str) -> int:
    return (await channel.queue_declare(queue, passive=True)).message_count or 0


async def _deeper(channel: AbstractChannel, queue: str, before: int) -> bool:
    return await _depth(channel, queue) > before


def config_with_sources(directory: Path, settings: Settings, sources: str = "") -> str:
    """The test config file (``write_config``) with ``sources`` TOML in place of none."""
    path = write_config(directory, settings)
    text = path.read_text(encoding="utf-8")
    if sources:
        text = text.replace("sources = []\n", "") + "\n" + sources
    path.write_text(text, encoding="utf-8")
    return str(path)


def run_shell(script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a bash script (a pipeline) from the project root, with the CLI's environment."""
    return subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=cli_env(),
        check=False,
    )


def run_cli_on_a_terminal(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    """Run ``event-gateway ARGS`` with stderr on a pseudo-terminal (stdout a pipe); returns
    (exit status, stdout, what the terminal got)."""
    controller, terminal = pty.openpty()
    # A real terminal has a size; tqdm draws nothing on a 0-column one.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        process = subprocess.Popen(
            [EVENT_GATEWAY, *args],
            stdout=subprocess.PIPE,
            stderr=terminal,
            cwd=ROOT,
            env=cli_env(),
        )
    finally:
        os.close(terminal)
    seen: list[bytes] = []
    try:
        while True:  # read the terminal as it writes, so it never blocks on a full buffer
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            seen.append(chunk)
        stdout = process.stdout.read() if process.stdout else b""
        process.wait(timeout)
    finally:
        os.close(controller)
        if process.stdout:
            process.stdout.close()
    return process.returncode, stdout.decode(), b"".join(seen).decode(errors="replace")


def json_lines(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    """Every stdout line of a CLI run, parsed (each must be a JSON object)."""
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert all(isinstance(line, dict) for line in lines), result.stdout
    return lines


def forget_later(env: Broker, *queues: str) -> None:
    """Delete these queues when the test ends."""
    env.extra_queues.update(queues)
