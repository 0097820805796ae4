"""A real ingress (real Publisher, real broker) with the sources a security test needs."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable

from aio_pika.abc import AbstractRobustConnection
from aiohttp.test_utils import TestClient

from gateway.app import PUBLISHER, create_app
from gateway.settings import AmqpSettings, HttpSettings, Settings, Source
from tests.broker import AMQP_URL
from tests.conftest import Ingress

ClientFactory = Callable[..., Awaitable[TestClient]]  # type: ignore[type-arg]


def networks(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


async def start_ingress(
    aiohttp_client: ClientFactory,
    prefix: str,
    amqp: AbstractRobustConnection,
    sources: tuple[Source, ...],
    *,
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (),
) -> Ingress:
    """The app on ``prefix`` with ``sources``, ready, and a capture queue bound to ``#``."""
    settings = Settings(
        http=HttpSettings(
            host="127.0.0.1", port=0, max_body_bytes=65536, trusted_proxies=trusted_proxies
        ),
        amqp=AmqpSettings(url=AMQP_URL, exchange=prefix, publish_timeout_s=3.0),
        sources=sources,
    )
    app = create_app(settings)
    client = await aiohttp_client(app)
    await asyncio.wait_for(app[PUBLISHER].wait_ready(), 15)  # type: ignore[attr-defined]
    channel = await amqp.channel()
    capture = await channel.declare_queue(f"{prefix}.capture", durable=False, auto_delete=False)
    await capture.bind(prefix, routing_key="#")
    return Ingress(client, channel, capture.name, f"{prefix}.rejected", settings)
