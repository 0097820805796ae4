"""A worker on a 3-node RabbitMQ cluster with quorum queues (contract §10): SIGKILL the node
it consumes through and it moves to another node of ``[amqp] urls`` and keeps consuming;
nothing published before or after the kill is lost.

Private nodes (``scripts/rabbitmq-cluster``), never the shared broker on 5672.
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from aio_pika.abc import AbstractRobustConnection

from consumers import Event
from consumers.worker import WorkerSpec
from gateway.amqp_message import to_message
from gateway.topology import declare_ingress
from tests.broker import unique_prefix
from tests.rabbit_nodes import Cluster, cluster_fixture, connection_to, delete_prefix  # noqa: F401
from tests.worker_support import as_received, eventually, fixture, make_settings, with_changes

pytestmark = pytest.mark.cluster

ROAMING = "org.camaraproject.device-roaming-status-subscriptions.v0.*"
BATCH = 50


def _events(start: int) -> list[dict[str, Any]]:
    return [
        as_received(with_changes(fixture("camara-roaming-status"), id=f"c-{n}"))
        for n in range(start, start + BATCH)
    ]


async def _publish(
    connection: AbstractRobustConnection, settings: Any, events: list[dict[str, Any]]
) -> None:
    """Publish with confirms, retrying while the test's own connection fails over."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    pending = list(events)
    while pending:
        try:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await declare_ingress(channel, settings.amqp)
            while pending:
                event = pending[0]
                await exchange.publish(
                    to_message(event, datetime.now(UTC)), routing_key=event["type"], timeout=5
                )
                pending.pop(0)
        except Exception:
            assert loop.time() < deadline, "could not publish to the cluster"
            await asyncio.sleep(0.5)  # the test's connection is failing over; try again


async def test_a_worker_keeps_consuming_after_its_node_dies(cluster: Cluster) -> None:
    """SIGKILL the worker's node: it reconnects to another node and consumes what was
    published before and after, every event at least once."""
    from tests.worker_support import running_worker

    prefix = unique_prefix()
    settings = make_settings(prefix)
    settings = replace(
        settings, amqp=replace(settings.amqp, url=cluster.urls[0], urls=cluster.urls)
    )
    seen: set[str] = set()

    async def handler(event: Event) -> None:
        seen.add(event.id)

    spec = WorkerSpec(queue=f"{prefix}.work", bindings=(ROAMING,), handler=handler)
    killed: int | None = None
    # The test talks through the other end of the list, so it is rarely on the killed node.
    async with connection_to(cluster.urls[::-1]) as connection:
        try:
            async with running_worker(settings, spec) as worker:
                await _publish(connection, settings, _events(0))
                await eventually(lambda: len(seen) >= BATCH, 30, "the first batch")
                node = worker.node
                assert node is not None
                killed = cluster.number_of(node)
                os.kill(cluster.pid(killed), signal.SIGKILL)
                await _publish(connection, settings, _events(BATCH))
                await eventually(lambda: len(seen) >= 2 * BATCH, 60, "the second batch")
                assert worker.node != node, "the worker moved to another node"
                assert worker.ready
                assert worker.metrics.restarts.labels(spec.queue)._value.get() >= 1
            assert seen == {f"c-{n}" for n in range(2 * BATCH)}
        finally:
            if killed is not None:
                cluster.restart(killed)
            await delete_prefix(connection, prefix, spec.queue, f"{spec.queue}.dlq")
