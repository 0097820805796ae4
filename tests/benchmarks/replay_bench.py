"""``make bench`` row ``dlq-replay``: how fast ``event-gateway dlq replay`` moves dead letters.

A fresh ``bench-<random>-replay`` prefix gets the roaming worker's queue and its ``.dlq``
(``queue_type``), the DLQ is filled with ``messages`` dead letters shaped as the workers leave
them (the ingress's properties and ``ce-*`` headers, ``x-gateway-error``,
``x-gateway-attempts``, a CAMARA roaming event as the body), then the real command runs as a
subprocess. The rate is messages / wall time of the whole command (process start, connect,
the confirm-then-ack moves, the final summary); its CPU time per message says how much of
that wait was the tool and how much the broker (on a busy machine, mostly the broker).
Verified afterwards: the summary says every message moved, the work queue holds them all and
the DLQ none. Everything is deleted at the end.
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiormq
import broker
from pamqp import commands

BODY = {
    "id": "",
    "source": "/callbacks/camara",
    "type": "org.camaraproject.device-roaming-status-subscriptions.v0.roaming-on",
    "specversion": "1.0",
    "time": "2026-11-30T12:00:00Z",
    "datacontenttype": "application/json",
    "gatewaysource": "camara",
    "gatewayreceived": "2026-11-30T12:00:00.000Z",
    "partitionkey": "+36701234567",
    "data": {
        "subscriptionId": "qs15-h556-rt89-1298",
        "device": {"phoneNumber": "+36701234567"},
        "roaming": True,
        "countryCode": 208,
        "countryName": ["FR"],
    },
}


class ReplayBenchError(Exception):
    """The replay did not run, or did not move every message."""


@dataclass
class ReplayResult:
    messages: int
    seconds: float
    fill_rate: float
    body_bytes: int
    summary: dict[str, int]
    cpu_s: float  # CPU time of the command (user + system)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def run(*, amqp_url: str, queue_type: str, messages: int, logs: Path) -> ReplayResult:
    prefix = broker.unique_prefix("replay")
    work = f"{prefix}.roaming"
    dlq = f"{work}.dlq"
    try:
        started = time.perf_counter()
        body_bytes = asyncio.run(_fill(amqp_url, queue_type, work, dlq, messages))
        fill_rate = messages / (time.perf_counter() - started)
        with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
            config = Path(tmp) / "gateway.toml"
            config.write_text(
                f"[amqp]\nurl = {json.dumps(amqp_url)}\nexchange = {json.dumps(prefix)}\n"
                f"queue_type = {json.dumps(queue_type)}\n",
                encoding="utf-8",
            )
            cli = Path(sys.executable).with_name("event-gateway")
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            done = subprocess.run(
                [str(cli), "dlq", "replay", "roaming", "--config", str(config)],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            seconds = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        (logs / "dlq-replay.log").write_text(done.stdout + done.stderr, encoding="utf-8")
        if done.returncode != 0:
            raise ReplayBenchError(f"dlq replay exited {done.returncode}: {done.stderr.strip()}")
        summary = json.loads(done.stdout.splitlines()[-1])
        left, moved = asyncio.run(_counts(amqp_url, dlq, work))
        if summary != {"replayed": messages, "failed": 0} or left or moved != messages:
            raise ReplayBenchError(
                f"summary {summary}, {moved} in the work queue, {left} left in the DLQ"
            )
        return ReplayResult(messages, seconds, fill_rate, body_bytes, summary, cpu_s)
    finally:
        asyncio.run(broker.delete(amqp_url, exchanges=[], queues=[work, dlq]))


async def _fill(url: str, queue_type: str, work: str, dlq: str, messages: int) -> int:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        for name in (work, dlq):
            await channel.queue_declare(name, durable=True, arguments={"x-queue-type": queue_type})
        window = asyncio.Semaphore(1000)
        size = 0

        async def publish(n: int) -> None:
            nonlocal size
            event = {**BODY, "id": f"bench-{n}"}
            body = json.dumps(event).encode()
            size = len(body)
            properties = commands.Basic.Properties(
                content_type="application/cloudevents+json",
                delivery_mode=2,
                message_id=event["id"],
                message_type=event["type"],
                app_id="event-gateway",
                headers={
                    "ce-id": event["id"],
                    "ce-source": event["source"],
                    "ce-type": event["type"],
                    "ce-specversion": "1.0",
                    "ce-partitionkey": event["partitionkey"],
                    "x-gateway-error": "RuntimeError: state store unavailable",
                    "x-gateway-attempts": 5,
                },
            )
            async with window:
                await channel.basic_publish(body, routing_key=dlq, properties=properties)

        await asyncio.gather(*(publish(n) for n in range(messages)))
        return size
    finally:
        await connection.close()


async def _counts(url: str, dlq: str, work: str) -> tuple[int, int]:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        left = (await channel.queue_declare(dlq, passive=True)).message_count or 0
        moved = (await channel.queue_declare(work, passive=True)).message_count or 0
        return left, moved
    finally:
        await connection.close()
