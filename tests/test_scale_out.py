"""Scale-out as processes: two ingresses and two replicas of each built-in worker on the real
RabbitMQ and PostgreSQL; one ingress and one worker are SIGKILLed mid-run, and every callback
answered 204 still ends in the state store exactly once."""

from __future__ import annotations

import asyncio
import copy
import json
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import pytest

from consumers.state import StateStore, open_store
from gateway.auth import hash_token
from gateway.cloudevent import rfc3339
from gateway.topology import dlq_name
from tests.broker import AMQP_URL, POSTGRES_URL, delete_everything, topology_names, unique_prefix
from tests.conftest import FIXTURES, TOKENS
from tests.processes import GatewayProcess, wait_http_ready
from tests.tcp_proxy import free_port

WORKERS = ("roaming", "reachability", "sms")
BACKOFF_S = 0.2
ROAMING = 800  # one device each, half roaming-status and half roaming-change-country
REACHABILITY = 600  # one device each, DATA / SMS / DISCONNECTED in turn
RECEIPTS = 300  # Notify SMS ids, two receipts each ("sending", then a final status)
INBOUND = 400
CONCURRENCY = 24
CALLBACK_DEADLINE_S = 30.0  # how long one callback is retried before the sender gives up
STATE_DEADLINE_S = 45.0
STOP_DEADLINE_S = 25.0
BASE_TIME = datetime(2026, 3, 1, tzinfo=UTC)
COUNTRIES = ((214, "ES"), (208, "FR"), (262, "DE"))
RETRYABLE = frozenset({429, 500, 502, 503, 504})


@dataclass
class Callback:
    """One callback to send, what it should leave in the state store, and how it ended."""

    kind: str  # roaming | reachability | receipt | inbound
    source: str
    content_type: str
    body: bytes
    key: str  # device key, or Notify id
    expected: dict[str, Any]
    status: int | None = None
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


def _fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    return loaded


def _at(seconds: int) -> str:
    return rfc3339(BASE_TIME + timedelta(seconds=seconds))


def build_callbacks(run: str, rng: random.Random) -> list[Callback]:
    """Mixed, uniquely identifiable callbacks built from the fixtures, shuffled."""
    callbacks: list[Callback] = []

    def camara(kind: str, event: dict[str, Any], key: str, expected: dict[str, Any]) -> None:
        body = json.dumps(event).encode()
        callbacks.append(
            Callback(kind, "camara", "application/cloudevents+json", body, key, expected)
        )

    for n in range(ROAMING):
        phone = f"+3670000{n:04d}"
        if n % 2:
            event = copy.deepcopy(_fixture("camara-roaming-change-country"))
            code, name = COUNTRIES[n % len(COUNTRIES)]
            event["data"].update(countryCode=code, countryName=[name])
            expected = {"roaming": True, "country_code": code, "country_name": [name]}
        else:
            event = copy.deepcopy(_fixture("camara-roaming-status"))
            roaming = n % 4 == 0
            event["data"]["roaming"] = roaming
            expected = {"roaming": roaming, "country_code": None, "country_name": None}
        event.update(id=f"{run}-roaming-{n}", time=_at(n))
        event["data"]["device"] = {"phoneNumber": phone}
        camara("roaming", event, phone, {**expected, "roaming_time": _at(n)})

    states = ("data", "sms", "disconnected")
    for n in range(REACHABILITY):
        phone = f"+3670001{n:04d}"
        state = states[n % len(states)]
        event = copy.deepcopy(_fixture(f"camara-reachability-{state}"))
        event.update(id=f"{run}-reachability-{n}", time=_at(n))
        event["data"]["device"] = {"phoneNumber": phone}
        expected = {"reachability": state.upper(), "reachability_time": _at(n)}
        camara("reachability", event, phone, expected)

    for n in range(RECEIPTS):
        notify_id = str(uuid.uuid4())
        final = "delivered" if n % 3 else "permanent-failure"
        for status, completed in (("sending", None), (final, _at(n + 60))):
            receipt = {
                **_fixture("notify-delivery-email-delivered"),
                "id": notify_id,
                "reference": f"{run}-{n}",
                "to": f"+4477009{n:05d}",
                "status": status,
                "notification_type": "sms",
                "created_at": _at(n),
                "completed_at": completed,
                "sent_at": _at(n),
            }
            expected = {"status": status, "time": completed or _at(n)}
            body = json.dumps(receipt).encode()
            callbacks.append(
                Callback("receipt", "notify-status", "application/json", body, notify_id, expected)
            )

    for n in range(INBOUND):
        sms = {
            **_fixture("notify-inbound-sms"),
            "id": str(uuid.uuid4()),
            "source_number": f"+4477008{n:05d}",
            "message": f"inbound {n}",
            "date_received": _at(n),
        }
        expected = {"source_number": sms["source_number"], "received_time": _at(n)}
        body = json.dumps(sms).encode()
        callbacks.append(
            Callback("inbound", "notify-inbound", "application/json", body, sms["id"], expected)
        )

    rng.shuffle(callbacks)
    return callbacks


class Sender:
    """Sends callbacks like a real sender: alternating ingresses, retrying a connection error,
    a 5xx or a 429 on the other (surviving) ingress until 204 or its own deadline."""

    def __init__(self, session: aiohttp.ClientSession, ports: tuple[int, int]) -> None:
        self.session = session
        self.ports = ports
        self.down: set[int] = set()
        self.answered_204 = 0
        self.progress = asyncio.Condition()

    async def send_all(self, callbacks: list[Callback]) -> None:
        queue: asyncio.Queue[tuple[int, Callback]] = asyncio.Queue()
        for item in enumerate(callbacks):
            queue.put_nowait(item)

        async def worker() -> None:
            while not queue.empty():
                index, callback = queue.get_nowait()
                await self.deliver(callback, self.ports[index % 2])

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    async def deliver(self, callback: Callback, port: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CALLBACK_DEADLINE_S
        headers = {
            "Content-Type": callback.content_type,
            "Authorization": f"Bearer {TOKENS[callback.source]}",
        }
        while True:
            if port in self.down:
                up = [p for p in self.ports if p not in self.down]
                if not up:  # everything looked down: try them all again
                    self.down.clear()
                    up = list(self.ports)
                port = up[0]
            callback.attempts += 1
            url = f"http://127.0.0.1:{port}/callbacks/{callback.source}"
            try:
                async with self.session.post(url, data=callback.body, headers=headers) as response:
                    await response.read()
                    callback.status = response.status
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                callback.status = None
                callback.errors.append(f":{port} {type(exc).__name__}")
                self.down.add(port)
            else:
                if callback.status == 204:
                    async with self.progress:
                        self.answered_204 += 1
                        self.progress.notify_all()
                    return
                callback.errors.append(f":{port} {callback.status}")
                if callback.status not in RETRYABLE:
                    return
                port = self.ports[1] if port == self.ports[0] else self.ports[0]
            if loop.time() > deadline:
                return
            await asyncio.sleep(0.05)  # the sender's retry back-off, not synchronisation


def _config(path: Path, prefix: str, state_url: str) -> Path:
    tokens = {source: hash_token(token) for source, token in TOKENS.items()}
    path.write_text(
        f"""
[http]
host = "127.0.0.1"

[amqp]
url = "{AMQP_URL}"
exchange = "{prefix}"

[state]
url = "{state_url}"

[workers]
retry_backoff_s = [{BACKOFF_S}]
drain_timeout_s = 10

[[sources]]
name = "camara"
adapter = "camara"
tokens = ["{tokens["camara"]}"]

[[sources]]
name = "notify-status"
adapter = "notify-delivery-status"
tokens = ["{tokens["notify-status"]}"]

[[sources]]
name = "notify-inbound"
adapter = "notify-inbound-sms"
tokens = ["{tokens["notify-inbound"]}"]
""",
        encoding="utf-8",
    )
    return path


@dataclass
class Deployment:
    """The processes of one scale-out deployment and what they share."""

    prefix: str
    schema: str
    state_url: str
    config: Path
    logs: Path
    processes: list[GatewayProcess] = field(default_factory=list)

    def start(self, name: str, *args: str) -> GatewayProcess:
        proc = GatewayProcess(name, (*args, "--config", str(self.config)), self.logs).start()
        self.processes.append(proc)
        return proc


@pytest.fixture
async def deployment(tmp_path: Path) -> AsyncIterator[Deployment]:
    """A unique exchange prefix and PostgreSQL schema; every process and object is removed."""
    prefix = unique_prefix()
    schema = "scale_" + prefix.removeprefix("t-")
    state_url = f"{POSTGRES_URL}?schema={schema}"
    config = _config(tmp_path / "gateway.toml", prefix, state_url)
    deployed = Deployment(prefix, schema, state_url, config, tmp_path)
    try:
        yield deployed
    finally:
        for proc in deployed.processes:
            if proc.alive():
                proc.kill()
        retry_queues = topology_names(prefix, backoff=(BACKOFF_S,))[1]
        await delete_everything(prefix, extra_queues=retry_queues)
        connection = await asyncpg.connect(POSTGRES_URL)
        try:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await connection.close()


async def _queue_counts(channel: aio_pika.abc.AbstractChannel, queue: str) -> tuple[int, int]:
    """(ready messages, consumers) of ``queue``."""
    declared = await channel.declare_queue(queue, passive=True)
    result = declared.declaration_result
    return result.message_count or 0, result.consumer_count or 0


async def _poll(check: Any, what: str, timeout: float) -> None:
    """Await ``check()`` until it is true; fail naming ``what`` after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.1)  # deadline poll: processes and the broker work on their own


TABLE_KEYS = {
    "roaming": "SELECT device FROM devices WHERE roaming_event_id IS NOT NULL",
    "reachability": "SELECT device FROM devices WHERE reachability_event_id IS NOT NULL",
    "receipt": "SELECT message_id, status FROM message_statuses",
    "inbound": "SELECT message_id FROM inbound_messages",
}


async def _table_keys(connection: asyncpg.Connection) -> dict[str, set[Any]]:
    """What the workers stored, straight from the schema's tables (on the search path)."""
    keys: dict[str, set[Any]] = {}
    for kind, sql in TABLE_KEYS.items():
        fetched = await connection.fetch(sql)
        keys[kind] = {tuple(r) if len(r) > 1 else r[0] for r in fetched}
    return keys


def _stored_key(callback: Callback) -> Any:
    if callback.kind == "receipt":
        return (callback.key, callback.expected["status"])
    return callback.key


def _same_time(stored: str | None, expected: str) -> bool:
    return stored is not None and datetime.fromisoformat(stored) == datetime.fromisoformat(expected)


async def _check_state(store: StateStore, callback: Callback) -> str | None:
    """None when the store holds what ``callback`` says, else what is wrong."""
    want = callback.expected
    if callback.kind == "roaming":
        device = await store.device(callback.key) or {}
        got = {k: device.get(k) for k in ("roaming", "country_code", "country_name")}
        ok = got == {k: want[k] for k in got} and _same_time(
            device.get("roaming_time"), want["roaming_time"]
        )
        return None if ok else f"device {callback.key}: {device} != {want}"
    if callback.kind == "reachability":
        device = await store.device(callback.key) or {}
        ok = device.get("reachability") == want["reachability"] and _same_time(
            device.get("reachability_time"), want["reachability_time"]
        )
        return None if ok else f"device {callback.key}: {device} != {want}"
    if callback.kind == "receipt":
        message = await store.message(callback.key) or {"history": []}
        entries = [h for h in message["history"] if h["status"] == want["status"]]
        ok = (
            len(entries) == 1
            and entries[0]["event_id"] == f"{callback.key}:{want['status']}"
            and _same_time(entries[0]["time"], want["time"])
        )
        return None if ok else f"message {callback.key}: {message} lacks {want}"
    inbound = await store.inbound(callback.key) or {}
    ok = inbound.get("source_number") == want["source_number"] and _same_time(
        inbound.get("received_time"), want["received_time"]
    )
    return None if ok else f"inbound {callback.key}: {inbound} != {want}"


async def _queue_empty(channel: aio_pika.abc.AbstractChannel, queue: str) -> bool:
    return (await _queue_counts(channel, queue))[0] == 0


def _acknowledged(callbacks: list[Callback]) -> dict[str, set[Any]]:
    """Per kind, the state keys of the callbacks that ended in 204."""
    keys: dict[str, set[Any]] = {kind: set() for kind in TABLE_KEYS}
    for callback in callbacks:
        if callback.status == 204:
            keys[callback.kind].add(_stored_key(callback))
    return keys


async def _verify_state(deployment: Deployment, callbacks: list[Callback]) -> None:
    """Wait until every 204 is stored; then check it is stored right, once, and nothing else."""
    acknowledged = _acknowledged(callbacks)
    connection = await asyncpg.connect(
        POSTGRES_URL, server_settings={"search_path": f'"{deployment.schema}"'}
    )
    store = await open_store(deployment.state_url)
    try:

        async def everything_stored() -> bool:
            keys = await _table_keys(connection)
            return all(acknowledged[kind] <= keys[kind] for kind in keys)

        await _poll(everything_stored, "every 204 in the state store", STATE_DEADLINE_S)
        # Exactly once: one row per device group, message status and inbound SMS; no extras.
        keys = await _table_keys(connection)
        assert {k: len(v) for k, v in keys.items()} == {k: len(v) for k, v in acknowledged.items()}
        assert keys == acknowledged
        assert await connection.fetchval("SELECT count(*) FROM devices") == ROAMING + REACHABILITY
        wrong = [w for c in callbacks if (w := await _check_state(store, c)) is not None]
        assert not wrong, f"{len(wrong)} wrong states, e.g. {wrong[:3]}"
    finally:
        await asyncio.gather(store.close(), connection.close())


async def _verify_queues(channel: aio_pika.abc.AbstractChannel, prefix: str) -> None:
    """Nothing dead-lettered, rejected or unrouted; the worker queues drained."""
    for name in WORKERS:
        queue = f"{prefix}.{name}"
        assert await _queue_empty(channel, dlq_name(queue)), f"{dlq_name(queue)} is not empty"
        await _poll(lambda q=queue: _queue_empty(channel, q), f"{queue} drained", STATE_DEADLINE_S)
    for name in ("rejected", "unrouted"):
        assert await _queue_empty(channel, f"{prefix}.{name}"), f"{prefix}.{name} is not empty"


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_scale_out_survives_killed_ingress_and_worker(deployment: Deployment) -> None:
    """2 ingresses + 2 replicas per worker; SIGKILL one of each mid-run; every 204 stored once."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    topology = deployment.start("topology", "topology")
    assert await asyncio.to_thread(topology.process.wait, 60) == 0, topology.stderr_tail()
    deployment.processes.remove(topology)

    ports = (free_port(), free_port())
    ingresses = [
        deployment.start(f"serve-{i}", "serve", "--port", str(p)) for i, p in enumerate(ports)
    ]
    workers = [deployment.start(f"consume-{n}-{r}", "consume", n) for n in WORKERS for r in (0, 1)]
    callbacks = build_callbacks(deployment.prefix, random.Random(20260301))

    connector = aiohttp.TCPConnector(limit=CONCURRENCY * 2)
    timeout = aiohttp.ClientTimeout(total=15)
    amqp = await aio_pika.connect(AMQP_URL)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session, amqp:
        channel = await amqp.channel()
        for proc, port in zip(ingresses, ports, strict=True):
            await wait_http_ready(session, proc, port, 60)

        async def all_consuming() -> bool:
            for proc in workers:
                assert proc.alive(), f"{proc.name} died:\n{proc.stderr_tail()}"
            counts = [await _queue_counts(channel, f"{deployment.prefix}.{n}") for n in WORKERS]
            return all(consumers == 2 for _, consumers in counts)

        await _poll(all_consuming, "two consumers on every worker queue", 60)
        ready_at = loop.time()

        sender = Sender(session, ports)
        killed = [ingresses[0], workers[0]]  # serve-0 and consume-roaming-0

        async def kill_mid_run() -> None:
            async with sender.progress:
                await sender.progress.wait_for(lambda: sender.answered_204 >= len(callbacks) // 3)
            for proc in killed:
                proc.kill()

        killer = asyncio.create_task(kill_mid_run())
        await sender.send_all(callbacks)
        sent_at = loop.time()
        assert killer.done(), f"never killed: only {sender.answered_204} callbacks got 204"
        await killer
        assert [proc.process.returncode for proc in killed] == [-9, -9]
        failed = [c for c in callbacks if c.status != 204]
        assert not failed, f"{len(failed)} callbacks never got 204, e.g. " + "; ".join(
            f"{c.kind} {c.key}: {c.errors[-3:]}" for c in failed[:5]
        )
        survivors = [proc for proc in deployment.processes if proc.alive()]
        assert len(survivors) == 6, [proc.name for proc in survivors]

        await _verify_state(deployment, callbacks)
        stored_at = loop.time()
        await _verify_queues(channel, deployment.prefix)

    # SIGTERM drains and exits 0, within a bound.
    codes = await asyncio.gather(*(proc.terminate(STOP_DEADLINE_S) for proc in survivors))
    exits = {proc.name: code for proc, code in zip(survivors, codes, strict=True)}
    assert exits == {proc.name: 0 for proc in survivors}, {
        proc.name: proc.stderr_tail(5) for proc in survivors if exits[proc.name] != 0
    }
    retried = sum(1 for c in callbacks if c.attempts > 1)
    print(
        f"\nscale-out: {len(callbacks)} callbacks ({retried} retried);"
        f" up {ready_at - started:.1f}s,"
        f" sending {sent_at - ready_at:.1f}s, stored after {stored_at - sent_at:.1f}s,"
        f" total {loop.time() - started:.1f}s"
    )
