"""Issue 8, the 140 KB attribute: against a real ``event-gateway serve`` and RabbitMQ, hostile
events get a 400 naming the field while concurrent legitimate senders all get 204, and the
ingress never loses its broker connection (it opens exactly one, through a counting proxy).

Before the attribute limits, RabbitMQ closed the shared connection (``FRAME_ERROR
frame_too_large``) on each such event, and everything in flight got a 503.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import aio_pika
import aiohttp
import orjson
import pytest

from gateway.auth import hash_token
from tests.broker import AMQP_URL, delete_everything, drain, unique_prefix
from tests.conftest import TOKENS
from tests.processes import GatewayProcess, wait_http_ready
from tests.tcp_proxy import TcpProxy, free_port

pytestmark = pytest.mark.slow

SENDERS = 8
REQUESTS_PER_SENDER = 40
ATTACKS_PER_KIND = 8
KB140 = "x" * 140_000
STRUCTURED = "application/cloudevents+json"


class CountingProxy(TcpProxy):
    """The test's TCP proxy, counting the connections it accepted."""

    accepted = 0

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        await super()._accept(reader, writer)


def _config(path: Path, prefix: str, amqp_url: str) -> Path:
    tokens = {source: hash_token(TOKENS[source]) for source in ("camara", "cloudevents")}
    path.write_text(
        f"""
[http]
host = "127.0.0.1"

[amqp]
url = "{amqp_url}"
exchange = "{prefix}"

[[sources]]
name = "camara"
adapter = "camara"
tokens = ["{tokens["camara"]}"]

[[sources]]
name = "cloudevents"
adapter = "cloudevents"
tokens = ["{tokens["cloudevents"]}"]
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
async def counting_proxy() -> AsyncIterator[CountingProxy]:
    target = urlsplit(AMQP_URL)
    proxy = CountingProxy(target.hostname or "127.0.0.1", target.port or 5672)
    await proxy.start()
    yield proxy
    await proxy.close()


def _event(n: int, **changes: object) -> bytes:
    event: dict[str, object] = {
        "specversion": "1.0",
        "id": f"legit-{n}",
        "source": "/partner",
        "type": "com.example.thing",
        "time": "2026-03-01T12:00:00Z",
        "data": {"n": n},
    }
    event.update(changes)
    return orjson.dumps(event)


# (source, body, the field the 400 must name)
ATTACKS = [
    ("cloudevents", _event(0, id="attack-source", source=KB140), "source"),
    ("cloudevents", _event(0, id="attack-pk", partitionkey=KB140), "partitionkey"),
    (
        "cloudevents",
        _event(0, id="attack-time", time="2026-03-01T12:00:00." + "1" * 140_000 + "Z"),
        "time",
    ),
    (
        "camara",
        _event(0, id="attack-phone", data={"device": {"phoneNumber": KB140}}),
        "partitionkey",
    ),
]


async def test_140_kb_attributes_are_400_while_everyone_else_gets_204(
    tmp_path: Path, counting_proxy: CountingProxy
) -> None:
    """Hostile 140 KB source/partitionkey/time/phone number: 400 naming the field; concurrent
    legitimate senders: all 204, all on the queue; one broker connection throughout."""
    prefix, port = unique_prefix(), free_port()
    config = _config(tmp_path / "gateway.toml", prefix, counting_proxy.url_for(AMQP_URL))
    connection = await aio_pika.connect(AMQP_URL)
    ingress = GatewayProcess(
        "serve", ("serve", "--config", str(config), "--port", str(port)), tmp_path
    ).start()
    try:
        async with connection, aiohttp.ClientSession() as session:
            await wait_http_ready(session, ingress, port, timeout=30)
            channel = await connection.channel()
            capture = await channel.declare_queue(f"{prefix}.capture", durable=False)
            await capture.bind(prefix, routing_key="#")
            connections_when_ready = counting_proxy.accepted
            url = f"http://127.0.0.1:{port}/callbacks"
            numbers = itertools.count(1)

            async def post(source: str, body: bytes) -> tuple[int, dict[str, object]]:
                headers = {
                    "Authorization": f"Bearer {TOKENS[source]}",
                    "Content-Type": STRUCTURED,
                }
                async with session.post(f"{url}/{source}", data=body, headers=headers) as r:
                    raw = await r.read()
                    return r.status, orjson.loads(raw) if raw else {}

            async def legitimate() -> list[int]:
                return [
                    (await post("cloudevents", _event(next(numbers))))[0]
                    for _ in range(REQUESTS_PER_SENDER)
                ]

            async def attacker() -> list[tuple[int, object, str]]:
                answers = []
                for _ in range(ATTACKS_PER_KIND):
                    for source, body, field in ATTACKS:
                        status, problem = await post(source, body)
                        answers.append((status, problem.get("field"), field))
                return answers

            attack_runs, legit_runs = await asyncio.gather(
                asyncio.gather(attacker(), attacker()),
                asyncio.gather(*(legitimate() for _ in range(SENDERS))),
            )
            attacks = [answer for run in attack_runs for answer in run]
            legit = [status for run in legit_runs for status in run]

            assert legit == [204] * SENDERS * REQUESTS_PER_SENDER
            assert [(status, got) for status, got, _ in attacks] == [
                (400, field) for _, _, field in attacks
            ]
            assert counting_proxy.accepted == connections_when_ready, "the ingress reconnected"
            stored = await drain(channel, capture.name, len(legit), timeout=15)
            assert sorted(orjson.loads(m.body)["id"] for m in stored) == sorted(
                f"legit-{n}" for n in range(1, len(legit) + 1)
            )
            assert ingress.alive()
            assert "Traceback" not in ingress.stderr_tail(200)
    finally:
        await ingress.terminate(timeout=15)
        if ingress.alive():
            ingress.kill()
        await delete_everything(prefix, extra_queues=[f"{prefix}.capture"])
