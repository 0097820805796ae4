"""Fairness (contract §7): one sender's burst of big batches never makes another source's
requests fail while the broker is healthy; the publisher waits for the socket to drain
(within ``publish_timeout_s``) instead of failing at once, and takes its turn among the
chunks of the burst instead of queueing behind all of it."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Callable
from dataclasses import replace

from aio_pika.abc import AbstractRobustConnection
from aiohttp.test_utils import TestClient

from gateway.app import PUBLISHER, create_app
from gateway.publisher import Publisher
from tests.conftest import FIXTURES, TOKENS, make_settings

BATCHES = 10
EVENTS_PER_BATCH = 4000
OTHER_EVENTS = 40
PUBLISH_TIMEOUT_S = 5.0  # the default
TEMPLATE = json.loads((FIXTURES / "camara-roaming-status.json").read_text())


def _batch(number: int) -> bytes:
    """4,000 small structured CloudEvents: ~1.3 MB of frames per batch once encoded."""
    return json.dumps(
        [
            {
                "specversion": "1.0",
                "id": f"burst-{number}-{n}",
                "source": "/fairness/burst",
                "type": "com.example.fairness.burst",
                "data": {"n": n, "pad": "x" * 120},
            }
            for n in range(EVENTS_PER_BATCH)
        ]
    ).encode()


async def test_a_burst_of_big_batches_does_not_fail_another_source(
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
    prefix: str,
    amqp: AbstractRobustConnection,
) -> None:
    """Ten concurrent 4,000-event batches fill the publisher (requests must wait their turn);
    every request of another source sent during the burst still gets 204."""
    settings = make_settings(prefix, publish_timeout_s=PUBLISH_TIMEOUT_S)
    settings = replace(
        settings,
        http=replace(
            settings.http,
            max_events_per_request=EVENTS_PER_BATCH,
            max_body_bytes=8 * 1024 * 1024,
            max_inflight_bytes=1024 * 1024 * 1024,
        ),
    )
    app = create_app(settings)
    client = await aiohttp_client(app)
    publisher = app[PUBLISHER]
    assert isinstance(publisher, Publisher)
    await asyncio.wait_for(publisher.wait_ready(), 15)
    # Events land on a plain in-memory queue: what is measured is the publisher, not how fast
    # this machine's disk takes 40,000 messages into the quorum queue for unrouted events.
    channel = await amqp.channel()
    capture = await channel.declare_queue(f"{prefix}.capture", durable=False)
    await capture.bind(prefix, routing_key="#")
    bodies = [_batch(number) for number in range(BATCHES)]
    saturated = False
    burst_over = asyncio.Event()

    async def sample() -> None:
        nonlocal saturated
        while not burst_over.is_set():
            stream = publisher._stream
            saturated = saturated or (stream is not None and not stream.writable(1))
            await asyncio.sleep(0)  # sample every loop turn while the burst lasts

    async def batch(body: bytes) -> int:
        response = await client.post(
            "/callbacks/cloudevents",
            data=io.BytesIO(body),  # aiohttp warns about sending large raw bytes
            headers={
                "Content-Type": "application/cloudevents-batch+json",
                "Authorization": f"Bearer {TOKENS['cloudevents']}",
            },
        )
        return response.status

    async def other(n: int) -> int:
        body = json.dumps({**TEMPLATE, "id": f"other-{n}"})
        response = await client.post(
            "/callbacks/camara",
            data=body,
            headers={
                "Content-Type": "application/cloudevents+json",
                "Authorization": f"Bearer {TOKENS['camara']}",
            },
        )
        return response.status

    sampler = asyncio.create_task(sample())
    burst = [asyncio.create_task(batch(body)) for body in bodies]
    others: list[int] = []
    while not all(task.done() for task in burst) or len(others) < OTHER_EVENTS:
        others += await asyncio.gather(*(other(len(others) + i) for i in range(4)))
    burst_statuses = await asyncio.gather(*burst)
    burst_over.set()
    await sampler

    assert saturated, "the burst never made a request wait for its turn"
    assert others == [204] * len(others), f"another source got {sorted(set(others))}"
    assert set(burst_statuses) <= {204, 503}
