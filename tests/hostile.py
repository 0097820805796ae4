"""Attacks on a real ``event-gateway serve`` process, for the limit tests and ``make stress``.

A ``Serve`` is one ingress subprocess (optionally under ``prlimit``) with its own config,
exchange prefix and log files; ``vm(...)`` reads its memory from ``/proc``. The attack
helpers open raw sockets or use aiohttp, and never wait without a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from gateway.auth import hash_token

ROOT = Path(__file__).resolve().parents[1]
EVENT_GATEWAY = str(Path(sys.executable).parent / "event-gateway")
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
HOSTILE_TOKEN = "hostile-token-1"
LEGIT_TOKEN = "legit-token-1"
BODY_LIMIT = 262144


def hostile_body(size: int = BODY_LIMIT) -> bytes:
    """``[{},{},…]`` of exactly ``size`` bytes: 24 times its size once parsed."""
    count = (size + 1) // 3
    return b"[" + b",".join([b"{}"] * count) + b"]"


def binary_headers(token: str, event_id: str | None = None) -> dict[str, str]:
    """A binary-mode CloudEvent: attributes in ce-* headers, the body is its JSON data."""
    return {
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": event_id or uuid.uuid4().hex,
        "ce-source": "https://attacker.example/x",
        "ce-type": "org.example.hostile",
    }


def legit_event() -> bytes:
    """A small structured CloudEvent nobody binds (it waits in ``.unrouted``)."""
    return (
        b'{"specversion":"1.0","id":"%s","source":"https://legit.example","type":'
        b'"org.example.legit","time":"2026-03-01T10:00:00Z","data":{"n":1}}'
    ) % uuid.uuid4().hex.encode()


LEGIT_HEADERS = {
    "Authorization": f"Bearer {LEGIT_TOKEN}",
    "Content-Type": "application/cloudevents+json",
}


def write_config(
    path: Path,
    prefix: str,
    port: int,
    http: Mapping[str, object] | None = None,
    amqp: Mapping[str, object] | None = None,
) -> Path:
    """Two cloudevents sources, ``hostile`` and ``legit``, each with its own token."""
    extra_http = "".join(f"{key} = {_toml(value)}\n" for key, value in (http or {}).items())
    extra_amqp = "".join(f"{key} = {_toml(value)}\n" for key, value in (amqp or {}).items())
    path.write_text(
        f"""log_format = "json"

[http]
host = "127.0.0.1"
port = {port}
{extra_http}
[amqp]
url = "{AMQP_URL}"
exchange = "{prefix}"
queue_type = "classic"
{extra_amqp}
[[sources]]
name = "hostile"
adapter = "cloudevents"
tokens = ["{hash_token(HOSTILE_TOKEN)}"]

[[sources]]
name = "legit"
adapter = "cloudevents"
tokens = ["{hash_token(LEGIT_TOKEN)}"]
""",
        encoding="utf-8",
    )
    return path


def _toml(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass
class Serve:
    """One ``event-gateway serve`` process; stdout and stderr go to files."""

    process: subprocess.Popen[bytes]
    port: int
    stdout: Path
    stderr: Path

    @classmethod
    def start(cls, config: Path, port: int, logs: Path, *, nofile: int | None = None) -> Serve:
        command = [EVENT_GATEWAY, "serve", "--config", str(config)]
        if nofile is not None:
            command = ["prlimit", f"--nofile={nofile}", "--", *command]
        stdout, stderr = logs / f"serve-{port}.out", logs / f"serve-{port}.err"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=ROOT
            )
        return cls(process, port, stdout, stderr)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def vm(self, field: str) -> int:
        """A ``/proc/<pid>/status`` memory field (``VmRSS``, ``VmHWM``) in bytes."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
        raise KeyError(field)

    def open_fds(self) -> int:
        return len(list(Path(f"/proc/{self.process.pid}/fd").iterdir()))

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                assert self.process.poll() is None, self.stderr.read_text(errors="replace")[-2000:]
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(
                        f"{self.url}/readyz", timeout=aiohttp.ClientTimeout(total=2)
                    ) as response:
                        if response.status == 200:
                            return
                assert time.monotonic() < deadline, "the ingress did not become ready"
                await asyncio.sleep(0.1)  # deadline poll while the subprocess comes up

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait (logs are flushed at exit); SIGKILL if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)

    def output(self) -> bytes:
        return self.stdout.read_bytes() + self.stderr.read_bytes()


async def hold_idle(port: int, count: int) -> list[asyncio.StreamWriter]:
    """Open ``count`` TCP connections that never send a byte."""
    writers: list[asyncio.StreamWriter] = []
    for _ in range(count):
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writers.append(writer)
    return writers


def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.transport.abort()


async def closed_within(reader: asyncio.StreamReader, timeout: float) -> float | None:
    """Seconds until the server closed the connection, or None if it stayed open."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return None
    except ConnectionError:
        pass
    return time.monotonic() - started


async def post(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    timeout: float = 30.0,
) -> tuple[int, float]:
    """(status, seconds); status 0 when the request failed without an answer."""
    started = time.monotonic()
    try:
        async with session.post(
            url, data=body, headers=dict(headers), timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            await response.read()
            return response.status, time.monotonic() - started
    except (aiohttp.ClientError, TimeoutError):
        return 0, time.monotonic() - started


async def hostile_bodies(url: str, count: int = 100) -> list[int]:
    """``count`` authenticated 256 KiB ``[{},…]`` bodies, all sent at once; their statuses."""
    body = hostile_body()
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        results = await asyncio.gather(
            *(
                post(session, f"{url}/callbacks/hostile", body, binary_headers(HOSTILE_TOKEN))
                for _ in range(count)
            )
        )
    return [status for status, _ in results]
