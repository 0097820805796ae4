"""Issue 8, the 140 KB attribute: against a real ``event-gateway serve`` and RabbitMQ, hostile
events get a 400 naming the field while concurrent legitimate senders all get 204, and the
ingress never loses its broker connection (it opens exactly one, through a counting proxy).

Before the attribute limits, RabbitMQ closed the shared connection (``FRAME_ERROR
frame_too_large``) on each such event, and everything in flight got a 503.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import aiohttp
import orjson
import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from aiohttp.test_utils import TestClient

from gateway.app import PUBLISHER, create_app
from gateway.auth import hash_token
from gateway.cloudevent import rfc3339
from tests.broker import AMQP_URL, delete_everything, drain, unique_prefix
from tests.conftest import TOKENS, make_settings
from tests.processes import GatewayProcess, wait_http_ready
from tests.tcp_proxy import TcpProxy, free_port

SENDERS = 8
REQUESTS_PER_SENDER = 40
ATTACKS_PER_KIND = 8
KB140 = "x" * 140_000
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


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


@pytest.mark.slow
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


@pytest.fixture
async def strict_ingress(
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
    prefix: str,
    amqp: AbstractRobustConnection,
) -> tuple[TestClient, AbstractChannel, str]:  # type: ignore[type-arg]
    """An in-process ingress on the real broker whose batches hold 3 events at most and
    whose ``cloudevents`` source allows no future skew; with its ``.rejected`` queue."""
    base = make_settings(prefix)
    settings = replace(
        base,
        http=replace(base.http, max_events_per_request=3),
        sources=tuple(
            replace(s, max_future_skew_s=0.0) if s.name == "cloudevents" else s
            for s in base.sources
        ),
    )
    app = create_app(settings)
    client = await aiohttp_client(app)
    await asyncio.wait_for(app[PUBLISHER].wait_ready(), 15)  # type: ignore[attr-defined]
    return client, await amqp.channel(), f"{prefix}.rejected"


async def _post(client: TestClient, source: str, body: bytes, content_type: str) -> Any:  # type: ignore[type-arg]
    headers = {"Authorization": f"Bearer {TOKENS[source]}", "Content-Type": content_type}
    return await client.post(f"/callbacks/{source}", data=body, headers=headers)


async def test_batch_over_max_events_is_413_kept_without_body(
    strict_ingress: tuple[TestClient, AbstractChannel, str],  # type: ignore[type-arg]
) -> None:
    """A batch of more than max_events_per_request events: 413, kept on .rejected without the
    body; a batch of exactly that many: 204."""
    client, channel, rejected = strict_ingress
    batch = b"[" + b",".join(_event(n) for n in range(4)) + b"]"
    response = await _post(client, "cloudevents", batch, BATCH)
    assert response.status == 413
    assert "at most 3 events" in (await response.json())["detail"]
    [kept] = await drain(channel, rejected, 1)
    record = orjson.loads(kept.body)
    assert record["status"] == 413
    assert "body" not in record
    assert "body_base64" not in record
    batch = b"[" + b",".join(_event(n) for n in range(3)) + b"]"
    assert (await _post(client, "cloudevents", batch, BATCH)).status == 204


async def test_future_skew_is_the_sources(
    strict_ingress: tuple[TestClient, AbstractChannel, str],  # type: ignore[type-arg]
) -> None:
    """The source with max_future_skew_s = 0 refuses a time a minute ahead (400 on time);
    another source, with the default 300 s, accepts it."""
    client, _, _ = strict_ingress
    ahead = rfc3339(datetime.now(UTC) + timedelta(seconds=60))
    response = await _post(client, "cloudevents", _event(1, time=ahead), STRUCTURED)
    assert response.status == 400
    assert (await response.json())["field"] == "time"
    camara = _event(2, time=ahead, type="org.camaraproject.qod.v0.qos-status-changed")
    response = await _post(client, "camara", camara, STRUCTURED)
    assert response.status == 204
