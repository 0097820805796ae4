"""``consume`` never exits because the broker or the store is unreachable (contract §9): it
waits with backoff and says so in the log; ``/healthz`` stays 200 (alive) while ``/readyz``
is 503 until it consumes. A real ``event-gateway consume`` process, with the broker and
PostgreSQL behind TCP proxies that refuse connections until the test opens them."""

from __future__ import annotations

import json
import signal
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from consumers.handlers import builtin_spec
from tests.tcp_proxy import TcpProxy, free_port
from tests.worker_support import (
    AMQP_URL,
    POSTGRES_URL,
    Broker,
    eventually,
    make_settings,
    start_cli,
    write_config,
)

pytestmark = pytest.mark.slow


def _proxy(url: str, default_port: int) -> TcpProxy:
    """A proxy to ``url``'s host and port, not listening yet (connections are refused)."""
    parts = urlsplit(url)
    return TcpProxy(parts.hostname or "127.0.0.1", parts.port or default_port)


def _logged(path: Path) -> list[str]:
    """The ``event`` of every JSON log line written so far."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return [json.loads(line)["event"] for line in text.splitlines() if line.startswith("{")]


async def test_consume_waits_for_store_and_broker_then_becomes_ready(
    env: Broker, tmp_path: Path, postgres_schema: str
) -> None:
    """Store and broker refused at start: alive, not ready, retrying in the log; ready once
    both answer; not ready (still alive) while the broker is cut again, ready after."""
    broker, database = _proxy(AMQP_URL, 5672), _proxy(POSTGRES_URL, 5432)
    pg = urlsplit(POSTGRES_URL)
    state_url = f"postgresql://{pg.netloc.rsplit('@', 1)[0]}@127.0.0.1:{database.port}{pg.path}"
    settings = make_settings(env.prefix, f"{state_url}?schema={postgres_schema}")
    url = broker.url_for(AMQP_URL)
    settings = replace(settings, amqp=replace(settings.amqp, url=url, urls=(url,)))
    env.track(builtin_spec(settings.amqp, "sms").queue, settings)
    port, output = free_port(), tmp_path / "worker.log"
    process = start_cli(
        "consume", "sms", "--metrics-port", str(port),
        "--config", str(write_config(tmp_path, settings)), output=output,
    )  # fmt: skip
    try:
        async with aiohttp.ClientSession() as http:

            async def probe(path: str) -> int:
                assert process.poll() is None, process.communicate()
                try:
                    async with http.get(f"http://127.0.0.1:{port}{path}") as response:
                        return response.status
                except aiohttp.ClientConnectionError:
                    return 0

            async def alive_not_ready() -> bool:
                return (await probe("/healthz"), await probe("/readyz")) == (200, 503)

            async def ready() -> bool:
                return await probe("/readyz") == 200

            await eventually(alive_not_ready, what="alive, not ready")
            await eventually(
                lambda: _logged(output).count("state store unreachable; retrying") >= 2,
                what="the store retried",
            )
            await database.start()
            await eventually(
                lambda: _logged(output).count("broker unreachable; retrying") >= 1,
                what="the broker retried",
            )
            assert await alive_not_ready()
            await broker.start()
            await eventually(ready, deadline_s=30, what="ready once both answer")

            await broker.cut()
            await eventually(alive_not_ready, what="not ready while the broker is cut")
            await broker.restore()
            await eventually(ready, deadline_s=30, what="ready again")
        process.send_signal(signal.SIGTERM)
        _stdout, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        await broker.close()
        await database.close()
    events = _logged(output)
    assert "worker session ended; starting again" in events
    assert events.count("worker consuming") == 2
