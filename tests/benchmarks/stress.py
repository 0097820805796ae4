"""``make stress``: the hostile mixes of issue 8 against a real ingress, next to a calm run.

Each mix starts its own ``event-gateway serve`` under ``prlimit --nofile=1024`` (a usual pod
limit) with the default ``[http]`` limits, on its own exchange prefix of the shared RabbitMQ.
For ``--duration`` seconds, legitimate senders (``--senders`` connections, small CloudEvents
to their own source) post as fast as they are answered, while the attack runs against
another source from a process of its own (so its client does not slow the senders' loop).
Printed per mix: the ingress's peak RSS (VmHWM), the legitimate senders' success rate (204),
p99 latency and throughput, and how the attacker was answered.

A benchmark, not a test: the numbers depend on the machine and on what else runs on it.

Usage: ``.venv/bin/python tests/benchmarks/stress.py [--duration 20] [--senders 8]
[--only calm,bodies]``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.broker import delete_everything, unique_prefix  # noqa: E402
from tests.hostile import (  # noqa: E402
    HOSTILE_TOKEN,
    LEGIT_HEADERS,
    Serve,
    binary_headers,
    close_all,
    hostile_body,
    legit_event,
    post,
    write_config,
)
from tests.tcp_proxy import free_port  # noqa: E402

MIB = 1024 * 1024
NOFILE = 1024
HOSTILE_JSON = {"Authorization": f"Bearer {HOSTILE_TOKEN}", "Content-Type": "application/json"}


@dataclass
class Tally:
    """What one side of a mix got back."""

    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    latencies: list[float] = field(default_factory=list)

    def add(self, status: int, seconds: float) -> None:
        self.statuses[status] += 1
        self.latencies.append(seconds)

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    def p99_ms(self) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


Attack = Callable[[int, asyncio.Event, Tally], Awaitable[None]]


async def calm(_port: int, stop: asyncio.Event, _tally: Tally) -> None:
    """No attack: the reference run."""
    await stop.wait()


def _structured(**attributes: object) -> bytes:
    event: dict[str, object] = {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": "https://attacker.example",
        "type": "org.example.hostile",
        "data": {},
    }
    event.update(attributes)
    return orjson.dumps(event)


async def _loop(
    port: int,
    stop: asyncio.Event,
    tally: Tally,
    concurrency: int,
    make: Callable[[], tuple[bytes, dict[str, str]]],
) -> None:
    """``concurrency`` connections posting ``make()`` to the hostile source until ``stop``."""
    url = f"http://127.0.0.1:{port}/callbacks/hostile"
    connector = aiohttp.TCPConnector(limit=0)

    async def one(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            body, headers = make()
            tally.add(*await post(session, url, body, headers, timeout=60))

    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(one(session) for _ in range(concurrency)))


async def huge_attributes(port: int, stop: asyncio.Event, tally: Tally) -> None:
    """CloudEvents whose ``source`` is 140 KB (once enough to close the broker connection)."""
    big = "https://attacker.example/" + "x" * 140_000
    await _loop(
        port,
        stop,
        tally,
        4,
        lambda: (
            _structured(source=big),
            {**HOSTILE_JSON, "Content-Type": "application/cloudevents+json"},
        ),
    )


async def bodies(port: int, stop: asyncio.Event, tally: Tally) -> None:
    """Waves of 100 concurrent authenticated 256 KiB ``[{},{},…]`` bodies in binary mode."""
    body = hostile_body()
    await _loop(port, stop, tally, 100, lambda: (body, binary_headers(HOSTILE_TOKEN)))


async def idle_connections(port: int, stop: asyncio.Event, tally: Tally) -> None:
    """1,100 TCP connections that never send a byte, topped up as the server closes them."""
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        while not stop.is_set():
            held = [(reader, writer) for reader, writer in held if not reader.at_eof()]
            while len(held) < 1100 and not stop.is_set():
                try:
                    held.append(await asyncio.open_connection("127.0.0.1", port))
                except OSError:
                    tally.add(0, 0.0)
                    break
                tally.add(1, 0.0)  # "1": a connection opened
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
    finally:
        close_all([writer for _, writer in held])


async def slow_headers(port: int, stop: asyncio.Event, tally: Tally) -> None:
    """200 clients sending their headers one line every 0.5 s, reconnecting when cut."""

    async def client() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                tally.add(0, 0.0)
                await asyncio.sleep(0.5)  # pacing of the attack, not synchronisation
                continue
            writer.write(b"POST /callbacks/hostile HTTP/1.1\r\nHost: x\r\n")
            with contextlib.suppress(ConnectionError):
                for index in range(10_000):
                    if stop.is_set() or reader.at_eof() or writer.is_closing():
                        break
                    writer.write(b"X-Slow-%d: 1\r\n" % index)
                    await writer.drain()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(reader.read(1), 0.5)  # pacing; EOF when cut
            writer.transport.abort()
            tally.add(2, time.monotonic() - started)  # "2": a slow client cut (or stopped)

    await asyncio.gather(*(client() for _ in range(200)))


async def batch_burst(port: int, stop: asyncio.Event, tally: Tally) -> None:
    """Ten concurrent CloudEvents batches of 1,000 events (max_events_per_request)."""

    def batch() -> tuple[bytes, dict[str, str]]:
        events = [orjson.loads(_structured(data={"n": index})) for index in range(1000)]
        return orjson.dumps(events), {
            **HOSTILE_JSON,
            "Content-Type": "application/cloudevents-batch+json",
        }

    await _loop(port, stop, tally, 10, batch)


async def rejected_flood(port: int, stop: asyncio.Event, tally: Tally) -> None:
    """Authenticated requests that are not CloudEvents (400, each kept on ``.rejected``)."""
    await _loop(port, stop, tally, 16, lambda: (b'{"not": "an event"}', dict(HOSTILE_JSON)))


MIXES: dict[str, Attack] = {
    "calm": calm,
    "huge-attributes": huge_attributes,
    "bodies": bodies,
    "idle-connections": idle_connections,
    "slow-headers": slow_headers,
    "batch-burst": batch_burst,
    "rejected-flood": rejected_flood,
}


async def legit_senders(serve: Serve, stop: asyncio.Event, tally: Tally, senders: int) -> None:
    url = f"{serve.url}/callbacks/legit"

    async def sender(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            tally.add(*await post(session, url, legit_event(), LEGIT_HEADERS, timeout=30))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.gather(*(sender(session) for _ in range(senders)))


@dataclass
class Result:
    mix: str
    peak_rss: int
    legit: Tally
    attack: Tally
    seconds: float


async def run_mix(name: str, duration: float, senders: int, logs: Path) -> Result:
    """One fresh ingress; the attack in its own process (its client must not slow ours)."""
    prefix = unique_prefix()
    port = free_port()
    config = write_config(logs / f"{name}.toml", prefix, port)
    serve = Serve.start(config, port, logs, nofile=NOFILE)
    try:
        await serve.wait_ready()
        attacker = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--attack",
            name,
            "--port",
            str(port),
            "--duration",
            str(duration),
            stdout=asyncio.subprocess.PIPE,
        )
        stop = asyncio.Event()
        legit = Tally()
        started = time.monotonic()
        senders_done = asyncio.create_task(legit_senders(serve, stop, legit, senders))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), duration)
        stop.set()
        await senders_done
        seconds = time.monotonic() - started
        output, _ = await attacker.communicate()
        hostile = Tally()
        for status, count in orjson.loads(output).items():
            hostile.statuses[int(status)] = count
        assert serve.process.poll() is None, f"the ingress died during {name}"
        return Result(name, serve.vm("VmHWM"), legit, hostile, seconds)
    finally:
        serve.stop()
        await delete_everything(prefix)


async def attack_alone(name: str, port: int, duration: float) -> int:
    """The attacker process: run one mix for ``duration``, print what it got as JSON."""
    stop = asyncio.Event()
    tally = Tally()
    task = asyncio.create_task(MIXES[name](port, stop, tally))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), duration)
    stop.set()
    await task
    sys.stdout.write(orjson.dumps({str(k): v for k, v in tally.statuses.items()}).decode())
    return 0


def _answers(tally: Tally) -> str:
    names = {0: "no answer", 1: "opened", 2: "cut"}
    return ", ".join(
        f"{names.get(status, status)} x{count}" for status, count in sorted(tally.statuses.items())
    )


def report(results: list[Result], senders: int) -> str:
    lines = [
        "| mix | peak RSS | legit 204 | legit p99 | legit req/s | attacker got |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for result in results:
        ok = result.legit.statuses[204] / max(1, result.legit.total)
        lines.append(
            f"| {result.mix} | {result.peak_rss / MIB:.0f} MiB | {100 * ok:.1f}% | "
            f"{result.legit.p99_ms():.0f} ms | {result.legit.total / result.seconds:.0f} | "
            f"{_answers(result.attack)} |"
        )
    lines.append("")
    lines.append(
        f"{senders} legitimate connections; ingress under prlimit --nofile={NOFILE}, "
        "default [http] limits."
    )
    return "\n".join(lines)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per mix")
    parser.add_argument("--senders", type=int, default=8, help="legitimate connections")
    parser.add_argument("--only", help=f"comma-separated mixes of: {', '.join(MIXES)}")
    parser.add_argument("--attack", choices=MIXES, help=argparse.SUPPRESS)  # attacker process
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attack:
        return await attack_alone(args.attack, args.port, args.duration)
    chosen = args.only.split(",") if args.only else list(MIXES)
    unknown = [name for name in chosen if name not in MIXES]
    if unknown:
        parser.error(f"unknown mix {', '.join(unknown)}")
    results = []
    with tempfile.TemporaryDirectory(prefix="stress-") as logs:
        for name in chosen:
            print(f"{name} ...", file=sys.stderr, flush=True)
            results.append(await run_mix(name, args.duration, args.senders, Path(logs)))
    print(report(results, args.senders))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
