"""Shared fixtures: a unique broker namespace per test and a real ingress in front of it."""

from __future__ import annotations

import asyncio
import ipaddress
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

import aio_pika
import asyncpg
import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import BaseRunner

from consumers.state import StateStore, open_store
from gateway.app import PUBLISHER, create_app
from gateway.auth import hash_token
from gateway.runner import GatewayRunner
from gateway.settings import AmqpSettings, HttpSettings, Settings, Source, TokenDigest
from tests.broker import AMQP_URL, POSTGRES_URL, delete_everything, unique_prefix
from tests.tcp_proxy import TcpProxy
from tests.worker_support import Broker, broker

FIXTURES = Path(__file__).parent / "fixtures"
TOKENS = {
    "camara": "camara-token-1",
    "cloudevents": "ce-token-1",
    "notify-status": "notify-status-token-1",
    "notify-inbound": "notify-inbound-token-1",
}


def fixture_source(fixture: Path) -> str:
    """The source a fixture is posted to: Notify receipts, inbound SMS, or CAMARA."""
    if fixture.name.startswith("notify-delivery"):
        return "notify-status"
    if fixture.name.startswith("notify-inbound"):
        return "notify-inbound"
    return "camara"


def fixture_content_type(fixture: Path) -> str:
    """CAMARA sends structured CloudEvents; Notify sends plain JSON."""
    if fixture.name.startswith("camara"):
        return "application/cloudevents+json"
    return "application/json"


# auth = "none" only together with allow_from (contract §8): the test client is local.
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def digest(token: str) -> TokenDigest:
    return TokenDigest(bytes.fromhex(hash_token(token).removeprefix("sha256:")))


def make_settings(prefix: str, **amqp: object) -> Settings:
    """Settings for one test: its own exchange prefix, one source per adapter."""
    return Settings(
        http=HttpSettings(host="127.0.0.1", port=0, max_body_bytes=65536),
        amqp=replace(AmqpSettings(url=AMQP_URL, exchange=prefix, publish_timeout_s=3.0), **amqp),  # type: ignore[arg-type]
        sources=(
            Source("camara", "camara", (digest(TOKENS["camara"]),)),
            Source("cloudevents", "cloudevents", (digest(TOKENS["cloudevents"]),)),
            Source("notify-status", "notify-delivery-status", (digest(TOKENS["notify-status"]),)),
            Source("notify-inbound", "notify-inbound-sms", (digest(TOKENS["notify-inbound"]),)),
            Source("open", "camara", (), auth="none", allow_from=LOOPBACK),
        ),
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    """A fresh SQLite state store."""
    opened = await open_store(f"sqlite:///{tmp_path / 'state.db'}")
    yield opened
    await opened.close()


@pytest.fixture
async def postgres_schema() -> AsyncIterator[str]:
    """A PostgreSQL schema name, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await connection.close()


@pytest.fixture
def postgres_url(postgres_schema: str) -> str:
    """A state URL on a fresh PostgreSQL schema, dropped afterwards."""
    return f"{POSTGRES_URL}?schema={postgres_schema}"


@pytest.fixture
async def env() -> AsyncIterator[Broker]:
    """A broker connection on a unique prefix, cleaned up afterwards."""
    async with broker() as state:
        yield state


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = unique_prefix()
    yield name
    await delete_everything(name, extra_queues=[f"{name}.capture"])


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    """A TCP proxy to the broker that the test can cut, stall and restore."""
    target = urlsplit(AMQP_URL)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5672)
    await proxy.start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def amqp() -> AsyncIterator[AbstractRobustConnection]:
    connection = await aio_pika.connect_robust(AMQP_URL)
    async with connection:
        yield connection


@dataclass
class Ingress:
    """A running ingress app plus a queue that captures everything it publishes."""

    client: TestClient  # type: ignore[type-arg]
    channel: AbstractChannel
    capture: str
    rejected: str
    settings: Settings

    async def post(
        self, source: str, body: bytes, content_type: str = "application/json", **headers: str
    ) -> tuple[int, bytes]:
        hdrs = {"Content-Type": content_type, **headers}
        if "Authorization" not in hdrs and source in TOKENS:
            hdrs["Authorization"] = f"Bearer {TOKENS[source]}"
        response = await self.client.post(f"/callbacks/{source}", data=body, headers=hdrs)
        return response.status, await response.read()

    async def post_fixture(self, fixture: Path) -> tuple[int, bytes]:
        """Post a fixture file the way its real sender would."""
        return await self.post(
            fixture_source(fixture), fixture.read_bytes(), fixture_content_type(fixture)
        )


IngressFactory = Callable[..., Awaitable[Ingress]]


class GatewayTestServer(TestServer):
    """aiohttp's test server on ``serve``'s runner: the fast callback path, the lean
    dispatch and the connection guard, as in production."""

    async def _make_runner(self, **kwargs: object) -> BaseRunner:
        return GatewayRunner(self.app, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
async def make_ingress(
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
    prefix: str,
    amqp: AbstractRobustConnection,
) -> IngressFactory:
    async def factory(**amqp_overrides: object) -> Ingress:
        settings = make_settings(prefix, **amqp_overrides)
        app = create_app(settings)
        client = await aiohttp_client(GatewayTestServer(app))  # serve's fast path and guard
        publisher = app[PUBLISHER]
        await asyncio.wait_for(publisher.wait_ready(), 15)  # type: ignore[attr-defined]
        channel = await amqp.channel()
        capture = await channel.declare_queue(f"{prefix}.capture", durable=False, auto_delete=False)
        await capture.bind(prefix, routing_key="#")
        return Ingress(client, channel, capture.name, f"{prefix}.rejected", settings)

    return factory


@pytest.fixture
async def ingress(make_ingress: IngressFactory) -> Ingress:
    return await make_ingress()
