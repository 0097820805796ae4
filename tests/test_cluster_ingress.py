"""The ingress on a 3-node RabbitMQ cluster with quorum queues (contract §10): SIGKILL the node
it is connected to under load, and no event answered 2xx is lost; 204 again within 15 s.

Private nodes (``scripts/rabbitmq-cluster``), never the shared broker on 5672.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
from aiohttp.test_utils import TestClient

from gateway.app import PUBLISHER, create_app
from gateway.publisher import Publisher
from tests.broker import unique_prefix
from tests.conftest import FIXTURES, TOKENS, make_settings
from tests.rabbit_nodes import (  # noqa: F401
    Cluster,
    cluster_fixture,
    connection_to,
    delete_prefix,
    missing_ids,
)
from tests.worker_support import eventually

pytestmark = pytest.mark.cluster

TEMPLATE = json.loads((FIXTURES / "camara-roaming-status.json").read_text())
HEADERS = {
    "Content-Type": "application/cloudevents+json",
    "Authorization": f"Bearer {TOKENS['camara']}",
}
RECOVERY_S = 15.0
SENDERS = 8


@dataclass
class Answer:
    event_id: str
    started: float
    status: int


async def test_killing_the_connected_node_loses_no_accepted_event(
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
    cluster: Cluster,
) -> None:
    """SIGKILL the node the ingress publishes through, under load: every 204 is in the quorum
    queue afterwards, the rest got 503, and a request started after the kill gets 204 within
    15 s (the ingress moved to another node)."""
    prefix = unique_prefix()
    capture = f"{prefix}.capture"
    settings = make_settings(prefix, url=cluster.urls[0], urls=cluster.urls, publish_timeout_s=3.0)
    app = create_app(settings)
    client = await aiohttp_client(app)
    publisher = app[PUBLISHER]
    assert isinstance(publisher, Publisher)
    await asyncio.wait_for(publisher.wait_ready(), 30)
    # The test reads through the other end of the list, so it is rarely on the killed node.
    async with connection_to(cluster.urls[::-1]) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            capture, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(prefix, routing_key="#")
        killed: int | None = None
        try:
            answers: list[Answer] = []
            counter = itertools.count()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()

            async def sender() -> None:
                while not stop.is_set():
                    event_id = f"cluster-{next(counter)}"
                    body = json.dumps({**TEMPLATE, "id": event_id})
                    started = loop.time()
                    response = await client.post("/callbacks/camara", data=body, headers=HEADERS)
                    answers.append(Answer(event_id, started, response.status))
                    if response.status != 204:
                        await asyncio.sleep(0.05)  # a retrying sender backs off a little

            def accepted_after(moment: float) -> list[Answer]:
                return [a for a in answers if a.status == 204 and a.started > moment]

            senders = [asyncio.create_task(sender()) for _ in range(SENDERS)]
            await eventually(lambda: len(accepted_after(0)) >= 300, 30, "300 accepted events")
            node = publisher.node
            assert node is not None
            killed = cluster.number_of(node)
            os.kill(cluster.pid(killed), signal.SIGKILL)
            killed_at = loop.time()
            await eventually(
                lambda: bool(accepted_after(killed_at)), RECOVERY_S + 5, "a 204 after the kill"
            )
            recovered_in = min(a.started for a in accepted_after(killed_at)) - killed_at
            await eventually(
                lambda: len(accepted_after(killed_at)) >= 300, 60, "300 more accepted events"
            )
            stop.set()
            await asyncio.gather(*senders)
            assert recovered_in < RECOVERY_S, f"204 again after {recovered_in:.1f}s"
            assert publisher.node != node, "the ingress moved to another node"
            print(f"204 again {recovered_in:.1f}s after the kill of node {killed}")
            assert {a.status for a in answers} <= {204, 503}

            accepted = {a.event_id for a in answers if a.status == 204}
            lost = await missing_ids(queue, accepted, 60)
            assert not lost, f"lost {len(lost)} of {len(accepted)} accepted events"
        finally:
            if killed is not None:
                await asyncio.to_thread(cluster.restart, killed)
            await delete_prefix(connection, prefix, capture)
