"""``make soak``: steady load through the ingress and the three built-in workers, with
PostgreSQL, for ``SOAK_MINUTES`` (default 10).

Starts ``event-gateway serve`` and ``event-gateway consume roaming|reachability|sms`` as
processes on a private exchange prefix and PostgreSQL schema, posts ``SOAK_RATE`` callbacks a
second (default 100: CAMARA roaming and reachability events and Notify SMS receipts, each
about its own device or message), and prints every minute each process's RSS and open file
descriptors and the depth of every work queue and DLQ. At the end it stops the load, waits
for the queues to drain and checks that every event answered 2xx reached the state store.

Fails (exit 1) when any process's RSS grew more than ``SOAK_RSS_GROWTH`` (default 10%)
between the end of the warm-up (``SOAK_WARMUP_MINUTES``, default 1) and the end, or when an
accepted event is missing from the store, or a process died.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from consumers.state import open_store  # noqa: E402
from gateway.auth import hash_token  # noqa: E402
from gateway.settings import WorkerSettings  # noqa: E402
from gateway.topology import retry_queue_names  # noqa: E402
from tests.broker import AMQP_URL, POSTGRES_URL  # noqa: E402
from tests.tcp_proxy import free_port  # noqa: E402

EVENT_GATEWAY = str(Path(sys.executable).parent / "event-gateway")
WORKERS = ("roaming", "reachability", "sms")
CAMARA = "org.camaraproject"
TOKENS = {"camara": "soak-camara-token", "notify-status": "soak-notify-token"}
CLIENT_CONNECTIONS = 32


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Load:
    """What was sent and what the ingress accepted, by kind."""

    accepted: dict[str, list[str]] = field(
        default_factory=lambda: {"roaming": [], "reachability": [], "sms": []}
    )
    refused: dict[int, int] = field(default_factory=dict)
    counter: itertools.count[int] = field(default_factory=itertools.count)

    def total(self) -> int:
        return sum(len(keys) for keys in self.accepted.values())


def request(kind: str, n: int) -> tuple[str, str, str, bytes]:
    """(source, content type, key the state is found by, body) of the n-th callback."""
    phone = f"+4470{n:09d}"
    stamp = "2026-01-01T00:00:00Z"
    if kind == "sms":
        key = f"soak-{n}"
        body = {
            "id": key,
            "reference": None,
            "to": phone,
            "status": "delivered",
            "notification_type": "sms",
            "created_at": stamp,
            "completed_at": stamp,
            "sent_at": stamp,
        }
        return "notify-status", "application/json", key, json.dumps(body).encode()
    api, event = (
        ("device-roaming-status-subscriptions", "roaming-status")
        if kind == "roaming"
        else ("device-reachability-status-subscriptions", "reachability-data")
    )
    data: dict[str, Any] = {"device": {"phoneNumber": phone}, "subscriptionId": f"sub-{n}"}
    if kind == "roaming":
        data["roaming"] = True
    body = {
        "id": f"soak-{n}",
        "source": "https://soak.example",
        "type": f"{CAMARA}.{api}.v0.{event}",
        "specversion": "1.0",
        "datacontenttype": "application/json",
        "data": data,
        "time": stamp,
    }
    return "camara", "application/cloudevents+json", phone, json.dumps(body).encode()


async def post_steadily(
    http: aiohttp.ClientSession, base: str, load: Load, rate: float, stop: asyncio.Event
) -> None:
    """``rate`` requests a second, round-robin over the three kinds, until ``stop``."""
    loop = asyncio.get_running_loop()
    interval, next_at = 1.0 / rate, loop.time()
    kinds = itertools.cycle(WORKERS)
    in_flight: set[asyncio.Task[None]] = set()

    async def one(kind: str, n: int) -> None:
        source, content_type, key, body = request(kind, n)
        headers = {"Content-Type": content_type, "Authorization": f"Bearer {TOKENS[source]}"}
        try:
            async with http.post(f"{base}/callbacks/{source}", data=body, headers=headers) as r:
                await r.read()
                status = r.status
        except aiohttp.ClientError:
            status = 0
        if 200 <= status < 300:
            load.accepted[kind].append(key)
        else:
            load.refused[status] = load.refused.get(status, 0) + 1

    while not stop.is_set():
        task = asyncio.create_task(one(next(kinds), next(load.counter)))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - loop.time()))  # pacing, not synchronisation
    if in_flight:
        await asyncio.gather(*in_flight)


def write_config(directory: Path, prefix: str, state_url: str, port: int) -> Path:
    digest = {name: hash_token(token) for name, token in TOKENS.items()}
    text = f"""
log_format = "json"

[http]
host = "127.0.0.1"
port = {port}

[amqp]
url = "{AMQP_URL}"
exchange = "{prefix}"

[state]
url = "{state_url}"

[[sources]]
name = "camara"
adapter = "camara"
tokens = ["{digest["camara"]}"]

[[sources]]
name = "notify-status"
adapter = "notify-delivery-status"
tokens = ["{digest["notify-status"]}"]
"""
    path = directory / "soak.toml"
    path.write_text(text, encoding="utf-8")
    return path


async def queue_depths(channel: aio_pika.abc.AbstractChannel, prefix: str) -> dict[str, int]:
    depths: dict[str, int] = {}
    for worker in WORKERS:
        for name in (f"{prefix}.{worker}", f"{prefix}.{worker}.dlq"):
            queue = await channel.declare_queue(name, passive=True)
            depths[name.removeprefix(prefix + ".")] = queue.declaration_result.message_count or 0
    return depths


async def missing_events(state_url: str, load: Load) -> dict[str, int]:
    """Accepted events whose state is not in the store, by kind."""
    store = await open_store(state_url)
    missing = {kind: 0 for kind in WORKERS}
    try:
        for key in load.accepted["sms"]:
            if await store.message(key) is None:
                missing["sms"] += 1
        for kind, field_name in (("roaming", "roaming"), ("reachability", "reachability")):
            for key in load.accepted[kind]:
                device = await store.device(key)
                if device is None or device[field_name] is None:
                    missing[kind] += 1
    finally:
        await store.close()
    return missing


async def soak(minutes: float, warmup: float, rate: float, growth: float) -> int:
    prefix = f"soak-{uuid.uuid4().hex[:8]}"
    schema = f"soak_{uuid.uuid4().hex[:8]}"
    state_url = f"{POSTGRES_URL}?schema={schema}"
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="event-gateway-soak-"))
    config = str(write_config(workdir, prefix, state_url, port))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    commands = {"ingress": ["serve", "--config", config]}
    for worker in WORKERS:
        commands[worker] = ["consume", worker, "--config", config]
    processes: dict[str, subprocess.Popen[bytes]] = {}
    print(f"soak: {minutes:g} min at {rate:g} req/s, warm-up {warmup:g} min; logs in {workdir}")
    connection = await aio_pika.connect(AMQP_URL)
    failures: list[str] = []
    try:
        processes.update(start(commands, workdir, env))
        base = f"http://127.0.0.1:{port}"
        # A bounded keep-alive pool, so the ingress's open fds show leaks, not pool growth.
        connector = aiohttp.TCPConnector(limit=CLIENT_CONNECTIONS)
        async with aiohttp.ClientSession(connector=connector) as http:
            await wait_ready(http, base, processes)
            await wait_queues(connection, prefix, processes)
            channel = await connection.channel()
            load, stop = Load(), asyncio.Event()
            sender = asyncio.create_task(post_steadily(http, base, load, rate, stop))
            started = time.monotonic()
            baseline: dict[str, int] = {}
            final: dict[str, int] = {}
            for minute in itertools.count(1):
                await asyncio.sleep(max(0.0, started + 60 * minute - time.monotonic()))
                dead = [name for name, p in processes.items() if p.poll() is not None]
                if dead:
                    failures.append(f"exited: {', '.join(dead)}")
                    break
                rss = {name: rss_kib(p.pid) for name, p in processes.items()}
                fds = {name: open_fds(p.pid) for name, p in processes.items()}
                depths = await queue_depths(channel, prefix)
                print(
                    json.dumps(
                        {
                            "minute": minute,
                            "accepted": load.total(),
                            "refused": load.refused,
                            "rss_kib": rss,
                            "open_fds": fds,
                            "queues": depths,
                        }
                    ),
                    flush=True,
                )
                final = rss
                if minute == max(1, round(warmup)):
                    baseline = rss
                if minute >= minutes:
                    break
            stop.set()
            await sender
            for name, before in baseline.items():
                after = final.get(name, 0)
                if before and after > before * (1 + growth):
                    failures.append(f"{name} RSS grew {after / before - 1:.1%} after warm-up")
            drained = await drain(channel, prefix)
            if not drained:
                failures.append("queues did not drain within 120 s")
            missing = await missing_events(state_url, load)
            depths = await queue_depths(channel, prefix)
            dead_lettered = sum(v for k, v in depths.items() if k.endswith(".dlq"))
            if any(missing.values()):
                failures.append(f"accepted events missing from the store: {missing}")
            summary = {
                "minutes": minutes,
                "accepted": load.total(),
                "refused": load.refused,
                "missing": missing,
                "dead_lettered": dead_lettered,
                "rss_kib_after_warmup": baseline,
                "rss_kib_final": final,
                "failures": failures,
            }
            print(json.dumps({"summary": summary}), flush=True)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        await cleanup(connection, prefix, schema)
    print("soak: FAILED: " + "; ".join(failures) if failures else "soak: ok")
    return 1 if failures else 0


def start(
    commands: dict[str, list[str]], workdir: Path, env: dict[str, str]
) -> dict[str, subprocess.Popen[bytes]]:
    """Start each ``event-gateway`` command, its output in ``workdir/<name>.log``."""
    processes = {}
    for name, args in commands.items():
        with (workdir / f"{name}.log").open("wb") as log:
            processes[name] = subprocess.Popen(
                [EVENT_GATEWAY, *args], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
            )
    return processes


async def wait_ready(
    http: aiohttp.ClientSession, base: str, processes: dict[str, subprocess.Popen[bytes]]
) -> None:
    deadline = time.monotonic() + 60
    while True:
        dead = [name for name, p in processes.items() if p.poll() is not None]
        if dead:
            raise SystemExit(f"soak: {', '.join(dead)} exited at start")
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(f"{base}/readyz") as response:
                if response.status == 200:
                    return
        if time.monotonic() > deadline:
            raise SystemExit("soak: the ingress did not become ready in 60 s")
        await asyncio.sleep(0.2)  # polling a starting process


async def wait_queues(
    connection: aio_pika.abc.AbstractConnection,
    prefix: str,
    processes: dict[str, subprocess.Popen[bytes]],
) -> None:
    """Until each worker consumes its queue (so no event is unrouted at the start)."""
    deadline = time.monotonic() + 60
    for worker in WORKERS:
        while True:
            channel = await connection.channel()  # a passive declare that fails closes it
            with contextlib.suppress(aio_pika.exceptions.ChannelClosed):
                queue = await channel.declare_queue(f"{prefix}.{worker}", passive=True)
                await channel.close()
                if queue.declaration_result.consumer_count:
                    break
            if time.monotonic() > deadline or processes[worker].poll() is not None:
                raise SystemExit(f"soak: worker {worker} is not consuming")
            await asyncio.sleep(0.2)  # polling a starting process


async def drain(channel: aio_pika.abc.AbstractChannel, prefix: str) -> bool:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        depths = await queue_depths(channel, prefix)
        if not any(v for k, v in depths.items() if not k.endswith(".dlq")):
            await asyncio.sleep(2)  # let the last batches commit and ack
            return True
        await asyncio.sleep(0.5)
    return False


async def cleanup(connection: aio_pika.abc.AbstractConnection, prefix: str, schema: str) -> None:
    channel = await connection.channel()
    for worker in WORKERS:
        queue = f"{prefix}.{worker}"
        for name in (queue, f"{queue}.dlq", *retry_queue_names(queue, WorkerSettings())):
            channel = await _quietly(channel, connection, channel.queue_delete, name)
    for name in (f"{prefix}.unrouted", f"{prefix}.rejected"):
        channel = await _quietly(channel, connection, channel.queue_delete, name)
    for name in (prefix, f"{prefix}.unrouted", f"{prefix}.rejected"):
        channel = await _quietly(channel, connection, channel.exchange_delete, name)
    await connection.close()
    db = await asyncpg.connect(POSTGRES_URL)
    try:
        await db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await db.close()


async def _quietly(
    channel: aio_pika.abc.AbstractChannel,
    connection: aio_pika.abc.AbstractConnection,
    action: Any,
    name: str,
) -> aio_pika.abc.AbstractChannel:
    try:
        await action(name)
    except Exception:
        return await connection.channel()
    return channel


def main() -> int:
    minutes = float(os.environ.get("SOAK_MINUTES", "10"))
    warmup = float(os.environ.get("SOAK_WARMUP_MINUTES", "1"))
    rate = float(os.environ.get("SOAK_RATE", "100"))
    growth = float(os.environ.get("SOAK_RSS_GROWTH", "0.10"))
    if minutes < warmup + 1:
        print("soak: SOAK_MINUTES must be at least the warm-up plus one", file=sys.stderr)
        return 2
    return asyncio.run(soak(minutes, warmup, rate, growth))


if __name__ == "__main__":
    sys.exit(main())
