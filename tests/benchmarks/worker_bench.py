"""Worker throughput: events/s one ``event-gateway consume roaming`` drains into a state store.

One run, for one state backend (SQLite file or a fresh PostgreSQL schema):

1. write a temporary config (exchange ``bench-<random>-worker-…``, quorum queues, default
   ``[workers]``) and declare the topology with ``event-gateway topology``;
2. pre-fill ``<exchange>.roaming`` with ``messages`` CAMARA roaming-status events exactly as
   the ingress publishes them: each body normalised by the ``camara`` adapter, sent with
   ``gateway.amqp_message.to_message`` to the exchange with the event type as routing key,
   publisher confirms on. Events rotate over ``devices`` phone numbers, each with a unique
   id and a later ``time`` than the one before, so every event is a real upsert;
3. start the worker and time from its consumer appearing on the queue until the queue has
   no ready message **and** the state store shows the last ``prefetch`` events applied (at
   most ``prefetch`` messages are in flight once nothing is ready, and those are the last
   ones: the queue is FIFO). events/s = messages / that time;
4. untimed checks: every device holds its final event, the worker stops cleanly on SIGTERM,
   and nothing is left in the queue, its retry queues or its ``.dlq``;
5. delete every queue and exchange of the prefix and, for PostgreSQL, drop the schema.

Peak RSS is the worker's ``VmHWM``, read before it is stopped; its CPU use while draining
(user + system, all threads) tells whether it was busy or waiting on the broker/database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import aio_pika
import asyncpg
import broker
import measure
import payload
import profiling
from servers import clean_env

from consumers.state import StateStore, open_store
from consumers.state.postgres import split_url
from gateway.adapters.camara import normalize
from gateway.adapters.context import Context as AdapterContext
from gateway.amqp_message import to_body, to_message
from gateway.cloudevent import CloudEvent, rfc3339
from gateway.settings import WorkerSettings
from gateway.topology import BUILTIN_BINDINGS, Names, dlq_name, retry_queue_names

Backend = Literal["sqlite", "postgresql"]
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
ROAMING_STATUS = "org.camaraproject.device-roaming-status-subscriptions.v0.roaming-status"
FILL_CONCURRENCY = 64
# (roaming, countryCode, countryName) by round: on in France, off, on in Germany, ...
_ROUNDS: tuple[tuple[bool, int | None, list[str] | None], ...] = (
    (True, 208, ["FR"]),
    (False, None, None),
    (True, 262, ["DE"]),
)
_EPOCH = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


class WorkerBenchError(Exception):
    """The worker could not be measured (it died, stalled, or left events unapplied)."""


@dataclass(frozen=True)
class Published:
    """One event as the ingress publishes it, and what the store must show afterwards."""

    event: CloudEvent
    received: datetime
    device: str
    time: str  # the event time as ``state device`` prints it


@dataclass
class WorkerResult:
    """What one worker run measured."""

    backend: Backend
    messages: int
    devices: int
    seconds: float
    rate: float
    startup_s: float
    fill_rate: float
    body_bytes: float
    rss_kib: int
    cpu_share: float  # the worker's CPU seconds per second while draining (1.0 = one core)
    prefetch: int
    exit_code: int | None
    left: dict[str, int] = field(default_factory=dict)
    profile: profiling.Recording | None = None


def phone(device: int) -> str:
    """The E.164 number of device ``device`` (fixed width)."""
    return f"+3672160{device:07d}"


def roaming_events(count: int, devices: int) -> list[Published]:
    """``count`` roaming-status events over ``devices`` devices, normalised by the adapter.

    Event ``i`` is for device ``i % devices``, its ``time`` is ``i`` milliseconds after a
    fixed start, and it was "received" a second later; ids are random UUIDs.
    """
    template = payload.roaming_event()
    out: list[Published] = []
    for i in range(count):
        roaming, code, names = _ROUNDS[(i // devices) % len(_ROUNDS)]
        moment = _EPOCH + timedelta(milliseconds=i)
        received = moment + timedelta(seconds=1)
        event: dict[str, Any] = json.loads(json.dumps(template))
        event["id"] = str(uuid.UUID(bytes=secrets.token_bytes(16), version=4))
        event["time"] = rfc3339(moment)
        data = event["data"]
        number = phone(i % devices)
        data["device"]["phoneNumber"] = number
        data["device"]["networkAccessIdentifier"] = f"{number[1:]}@domain.supertelco.com"
        data["roaming"] = roaming
        for key, value in (("countryCode", code), ("countryName", names)):
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        headers = {"content-type": "application/cloudevents+json"}
        (normalised,) = normalize(
            headers, payload.encode(event), AdapterContext("camara", rfc3339(received))
        )
        out.append(Published(normalised, received, number, rfc3339(moment)))
    return out


def sample_body() -> bytes:
    """One event body as the ingress publishes it: what the raw consume ceiling is fed."""
    return to_body(roaming_events(1, 1)[0].event)


def config_text(amqp_url: str, exchange: str, queue_type: str, state_url: str) -> str:
    """The worker's temporary TOML: default ``[workers]``, no sources (it serves no HTTP)."""
    return "\n".join(
        [
            "[amqp]",
            f"url = {json.dumps(amqp_url)}",
            f"exchange = {json.dumps(exchange)}",
            f"queue_type = {json.dumps(queue_type)}",
            "",
            "[state]",
            f"url = {json.dumps(state_url)}",
            "",
        ]
    )


def created_names(exchange: str) -> tuple[list[str], list[str]]:
    """Every exchange and queue ``event-gateway topology`` declares for ``exchange``."""
    names = Names.for_prefix(exchange)
    exchanges = [names.exchange, names.unrouted, names.rejected]
    queues = [names.unrouted, names.rejected]
    for short in BUILTIN_BINDINGS:
        queue = names.queue(short)
        queues += [queue, dlq_name(queue)]
        queues += retry_queue_names(queue, _defaults())
    return exchanges, queues


def _defaults() -> WorkerSettings:
    return WorkerSettings()


def _cli() -> str:
    return str(Path(sys.executable).with_name("event-gateway"))


def _tail(log: Path, lines: int = 5) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(text.strip().splitlines()[-lines:])


# --- broker ---------------------------------------------------------------------------------


async def fill(url: str, exchange: str, events: list[Published]) -> float:
    """Publish ``events`` with confirms, ``FILL_CONCURRENCY`` at a time; returns msg/s."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange, ensure=False)
        pending = iter(events)

        async def publisher() -> None:
            for item in pending:
                await target.publish(
                    to_message(item.event, item.received), routing_key=item.event["type"]
                )

        started = time.perf_counter()
        await asyncio.gather(*(publisher() for _ in range(FILL_CONCURRENCY)))
        return len(events) / (time.perf_counter() - started)


class QueueWatch:
    """Passive declares of one queue on a connection of its own, for cheap polling."""

    def __init__(self, channel: aio_pika.abc.AbstractChannel) -> None:
        self._channel = channel

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, url: str) -> AsyncIterator[QueueWatch]:
        connection = await aio_pika.connect(url)
        async with connection:
            yield cls(await connection.channel())

    async def counts(self, queue: str) -> tuple[int, int]:
        """(ready messages, consumers) of ``queue``."""
        declared = await self._channel.declare_queue(queue, passive=True)
        result = declared.declaration_result
        return result.message_count or 0, result.consumer_count or 0


# --- the worker process ---------------------------------------------------------------------


@contextlib.contextmanager
def worker_process(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``event-gateway consume roaming``; SIGKILLed on the way out if still running."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [_cli(), "consume", "roaming", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=clean_env(),
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def stop_worker(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int | None:
    """SIGTERM (drain and exit 0), then SIGKILL after ``timeout_s``; returns the exit code."""
    if process.poll() is not None:
        return process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return await asyncio.to_thread(process.wait, timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        await asyncio.to_thread(process.wait)
        return None


def _alive(process: subprocess.Popen[bytes], log: Path) -> None:
    if process.poll() is not None:
        raise WorkerBenchError(f"worker exited with {process.returncode}: {_tail(log)}")


async def wait_consuming(
    watch: QueueWatch, queue: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float
) -> None:
    """Return as soon as the queue has a consumer (polled every 5 ms)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _alive(process, log)
        if (await watch.counts(queue))[1] >= 1:
            return
        await asyncio.sleep(0.005)
    raise WorkerBenchError(f"worker not consuming after {timeout_s:.0f}s: {_tail(log)}")


async def applied(store: StateStore, events: list[Published]) -> int:
    """How many of ``events`` the store shows as the device's roaming state."""
    done = 0
    for item in events:
        state = await store.device(item.device)
        if state is not None and state["roaming_time"] == item.time:
            done += 1
    return done


async def wait_drained(
    watch: QueueWatch,
    queue: str,
    store: StateStore,
    tail: list[Published],
    process: subprocess.Popen[bytes],
    log: Path,
    timeout_s: float,
) -> None:
    """Return once nothing is ready in ``queue`` and every event in ``tail`` is applied."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _alive(process, log)
        ready, _ = await watch.counts(queue)
        if ready == 0 and await applied(store, tail) == len(tail):
            return
        await asyncio.sleep(0.01)
    ready, _ = await watch.counts(queue)
    raise WorkerBenchError(
        f"not drained after {timeout_s:.0f}s: {ready} ready, "
        f"{await applied(store, tail)}/{len(tail)} of the last events applied"
    )


@contextlib.asynccontextmanager
async def reader(state_url: str) -> AsyncIterator[StateStore]:
    """The state store, opened by the benchmark to check what the worker wrote."""
    store = await open_store(state_url)
    try:
        yield store
    finally:
        await store.close()


async def drop_schema(state_url: str) -> None:
    """``DROP SCHEMA … CASCADE`` of a ``?schema=`` PostgreSQL state URL."""
    dsn, schema = split_url(state_url)
    if schema is None:
        return
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


# --- one run --------------------------------------------------------------------------------


async def _declare(config: Path, log: Path) -> None:
    done = await asyncio.to_thread(
        subprocess.run,
        [_cli(), "topology", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=clean_env(),
    )
    log.write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise WorkerBenchError(f"`event-gateway topology` exited {done.returncode}: {tail[0]}")


async def _measure(
    *,
    amqp_url: str,
    exchange: str,
    state_url: str,
    config: Path,
    events: list[Published],
    backend: Backend,
    logs: Path,
    profile_dir: Path | None,
) -> WorkerResult:
    queue = Names.for_prefix(exchange).queue("roaming")
    prefetch = _defaults().prefetch
    devices = len({e.device for e in events})
    log = logs / f"worker-{backend}.log"
    await _declare(config, logs / f"worker-{backend}-topology.log")
    fill_rate = await fill(amqp_url, exchange, events)
    async with QueueWatch.open(amqp_url) as watch:
        ready, consumers = await watch.counts(queue)
        if ready != len(events) or consumers:
            raise WorkerBenchError(f"pre-fill left {ready} ready of {len(events)} published")
        with worker_process(config, log) as process:
            spawned = time.perf_counter()
            await wait_consuming(watch, queue, process, log, 60)
            started = time.perf_counter()
            cpu_before = measure.cpu_seconds(process.pid)
            recording = None
            if profile_dir is not None:
                recording = profiling.record(process.pid, None, profile_dir, f"worker-{backend}")
            async with reader(state_url) as store:
                try:
                    await wait_drained(
                        watch,
                        queue,
                        store,
                        events[-min(prefetch, devices) :],
                        process,
                        log,
                        timeout_s=max(120.0, len(events) / 50),
                    )
                    seconds = time.perf_counter() - started
                    cpu = measure.cpu_seconds(process.pid) - cpu_before
                finally:
                    if recording is not None:
                        recording.stop()
                rss = measure.tree_vmhwm_kib(process.pid)
                missing = devices - await applied(store, events[-devices:])
            exit_code = await stop_worker(process)
        left = {name: (await watch.counts(name))[0] for name in _worker_queues(queue)}
    if missing:
        raise WorkerBenchError(f"{missing} of {devices} devices do not show their final event")
    if any(left.values()):
        stuck = ", ".join(f"{name}: {count}" for name, count in left.items() if count)
        raise WorkerBenchError(f"messages left after the drain ({stuck})")
    return WorkerResult(
        backend=backend,
        messages=len(events),
        devices=devices,
        seconds=seconds,
        rate=len(events) / seconds,
        startup_s=started - spawned,
        fill_rate=fill_rate,
        body_bytes=sum(len(to_body(e.event)) for e in events) / len(events),
        rss_kib=rss,
        cpu_share=cpu / seconds,
        prefetch=prefetch,
        exit_code=exit_code,
        left=left,
        profile=recording,
    )


def _worker_queues(queue: str) -> list[str]:
    return [queue, dlq_name(queue), *retry_queue_names(queue, _defaults())]


def run(
    *,
    backend: Backend,
    amqp_url: str,
    postgres_url: str,
    queue_type: str,
    messages: int,
    devices: int,
    logs: Path,
    failed: list[str],
    profile_dir: Path | None = None,
) -> WorkerResult:
    """Measure one backend; what clean-up could not delete is appended to ``failed``."""
    exchange = broker.unique_prefix(f"worker-{backend}")
    events = roaming_events(messages, devices)
    logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        if backend == "sqlite":
            state_url = "sqlite:///" + str(Path(tmp) / "state.db")
        else:
            schema = f"bench_{secrets.token_hex(4)}"
            state_url = f"{postgres_url}{'&' if '?' in postgres_url else '?'}schema={schema}"
        config = Path(tmp) / "worker.toml"
        config.write_text(config_text(amqp_url, exchange, queue_type, state_url), "utf-8")

        async def go() -> WorkerResult:
            try:
                return await _measure(
                    amqp_url=amqp_url,
                    exchange=exchange,
                    state_url=state_url,
                    config=config,
                    events=events,
                    backend=backend,
                    logs=logs,
                    profile_dir=profile_dir,
                )
            finally:
                exchanges, queues = created_names(exchange)
                failed.extend(await broker.delete(amqp_url, exchanges=exchanges, queues=queues))
                if backend == "postgresql":
                    try:
                        await drop_schema(state_url)
                    except (OSError, asyncpg.PostgresError) as exc:
                        failed.append(f"schema of {state_url}: {exc}")

        return asyncio.run(go())
