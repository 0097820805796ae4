"""Losing the broker mid-load: every 204 is on the queue, the rest got 503, and it recovers.

The shared RabbitMQ is never touched: the gateway talks to it through a TCP proxy that the
test cuts and restores.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import replace

from aio_pika.abc import AbstractRobustConnection
from aiohttp.test_utils import TestClient

from gateway.app import PUBLISHER, create_app
from tests.broker import AMQP_URL, drain
from tests.conftest import FIXTURES, TOKENS, make_settings
from tests.tcp_proxy import TcpProxy
from tests.worker_support import eventually

DEAD_URL = "amqp://guest:guest@127.0.0.1:1/"
TEMPLATE = json.loads((FIXTURES / "camara-roaming-status.json").read_text())
HEADERS = {
    "Content-Type": "application/cloudevents+json",
    "Authorization": f"Bearer {TOKENS['camara']}",
}


async def _proxied_ingress(
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
    prefix: str,
    proxy: TcpProxy,
    *,
    publish_timeout_s: float,
) -> TestClient:  # type: ignore[type-arg]
    """An ingress that reaches the broker only through ``proxy``, connected and ready."""
    settings = make_settings(prefix, publish_timeout_s=publish_timeout_s)
    proxied = proxy.url_for(AMQP_URL)
    app = create_app(replace(settings, amqp=replace(settings.amqp, url=proxied, urls=(proxied,))))
    client = await aiohttp_client(app)
    await asyncio.wait_for(app[PUBLISHER].wait_ready(), 15)  # type: ignore[attr-defined]
    return client


async def test_broker_loss_mid_load(
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
    prefix: str,
    proxy: TcpProxy,
    amqp: AbstractRobustConnection,
) -> None:
    """Cut the broker under load: 204s are all stored, others got 503, service comes back."""
    client = await _proxied_ingress(aiohttp_client, prefix, proxy, publish_timeout_s=1.0)

    channel = await amqp.channel()
    capture = await channel.declare_queue(f"{prefix}.capture", durable=False)
    await capture.bind(prefix, routing_key="#")

    counter = itertools.count()
    statuses: dict[str, int] = {}
    stop = asyncio.Event()

    async def sender() -> None:
        while not stop.is_set():
            event_id = f"loss-{next(counter)}"
            body = json.dumps({**TEMPLATE, "id": event_id})
            response = await client.post("/callbacks/camara", data=body, headers=HEADERS)
            statuses[event_id] = response.status
            if response.status == 503:
                assert "Retry-After" in response.headers
                await asyncio.sleep(0.01)  # a retrying sender backs off a little

    def count(status: int) -> int:
        return sum(1 for s in statuses.values() if s == status)

    senders = [asyncio.create_task(sender()) for _ in range(8)]
    await eventually(lambda: count(204) >= 200, 20, "200 accepted events")
    await proxy.cut()
    await eventually(lambda: count(503) >= 20, 10, "503s while the broker is gone")
    ready = await client.get("/readyz")
    assert ready.status == 503
    accepted_before_restore = count(204)
    await proxy.restore()
    await eventually(lambda: count(204) >= accepted_before_restore + 200, 30, "recovery by itself")
    stop.set()
    await asyncio.gather(*senders)

    assert set(statuses.values()) <= {204, 503}
    accepted = {event_id for event_id, status in statuses.items() if status == 204}
    stored = await drain(channel, capture.name, len(accepted), timeout=20)
    stored_ids = {message.message_id for message in stored}
    # Drain whatever else arrived (503s whose publish did complete: at-least-once is fine).
    while (extra := await capture.get(no_ack=True, fail=False)) is not None:
        stored_ids.add(extra.message_id)
    assert accepted <= stored_ids, f"lost {len(accepted - stored_ids)} accepted events"
    assert (await client.get("/readyz")).status == 200


async def test_stalled_broker_is_503_within_the_publish_timeout(
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
    prefix: str,
    proxy: TcpProxy,
) -> None:
    """A broker that stops answering gives 503 within the publish timeout, never a hang, and
    /readyz 503 until it answers again."""
    client = await _proxied_ingress(aiohttp_client, prefix, proxy, publish_timeout_s=0.5)
    body = (FIXTURES / "camara-roaming-status.json").read_bytes()
    proxy.stall()
    started = asyncio.get_running_loop().time()
    response = await client.post("/callbacks/camara", data=body, headers=HEADERS)
    elapsed = asyncio.get_running_loop().time() - started
    assert response.status == 503
    assert "Retry-After" in response.headers
    assert 0.4 <= elapsed < 3.0
    # Every POST fails while it stalls, so /readyz must not say 200 (probed until it answers).
    assert (await client.get("/readyz")).status == 503
    proxy.resume()

    async def ready() -> bool:
        return (await client.get("/readyz")).status == 200

    await eventually(ready, 10, "/readyz 200 once the broker answers again")
    response = await client.post("/callbacks/camara", data=body, headers=HEADERS)
    assert response.status == 204


async def test_unreachable_broker_is_503_not_a_hang(
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
    prefix: str,
) -> None:
    """With no broker at all the ingress starts, is not ready, and answers 503 at once."""
    settings = make_settings(prefix)
    settings = replace(settings, amqp=replace(settings.amqp, url=DEAD_URL, urls=(DEAD_URL,)))
    client = await aiohttp_client(create_app(settings))
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/readyz")).status == 503
    body = (FIXTURES / "camara-roaming-status.json").read_bytes()
    response = await asyncio.wait_for(
        client.post("/callbacks/camara", data=body, headers=HEADERS),
        settings.amqp.publish_timeout_s,
    )
    assert response.status == 503
    assert response.headers["Retry-After"]
    assert response.content_type == "application/problem+json"
    # A bad request is not "kept" either when the broker is gone: the sender must retry.
    bad = await client.post("/callbacks/camara", data=b"{", headers=HEADERS)
    assert bad.status == 503


async def test_nacked_publish_is_503(
    make_ingress: Callable[..., Awaitable[object]], prefix: str, amqp: AbstractRobustConnection
) -> None:
    """A queue that refuses the message (full, reject-publish) makes the broker nack: 503."""
    ingress = await make_ingress()
    channel = await amqp.channel()
    full = await channel.declare_queue(
        f"{prefix}.capture-full",
        arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
        auto_delete=True,
    )
    await full.bind(prefix, routing_key="#")
    body = (FIXTURES / "camara-roaming-status.json").read_bytes()
    response = await ingress.client.post(  # type: ignore[attr-defined]
        "/callbacks/camara", data=body, headers=HEADERS
    )
    assert response.status == 503
    assert "Retry-After" in response.headers
    await full.delete(if_unused=False, if_empty=False)
