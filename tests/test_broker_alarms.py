"""A broker that blocks publishers (contract §10): a memory or a disk alarm on a private node
gives 503 within ``publish_timeout_s``, ``/readyz`` 503 while blocked, 204 once the alarm
clears, and nothing answered 2xx is lost.

The alarm is raised and cleared with ``rabbitmqctl set_vm_memory_high_watermark`` /
``set_disk_free_limit`` on a node of the test's own (``scripts/rabbitmq-cluster single``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
from aiohttp.test_utils import TestClient

from gateway.app import PUBLISHER, create_app
from gateway.publisher import Publisher
from tests.broker import unique_prefix
from tests.conftest import FIXTURES, TOKENS, make_settings
from tests.rabbit_nodes import (  # noqa: F401
    SingleNode,
    connection_to,
    delete_prefix,
    missing_ids,
    single_node_fixture,
)
from tests.worker_support import eventually

pytestmark = pytest.mark.cluster

TEMPLATE = json.loads((FIXTURES / "camara-roaming-status.json").read_text())
HEADERS = {
    "Content-Type": "application/cloudevents+json",
    "Authorization": f"Bearer {TOKENS['camara']}",
}
PUBLISH_TIMEOUT_S = 2.0
# rabbitmqctl arguments that raise and clear each alarm.
ALARMS = {
    "memory": (
        ("set_vm_memory_high_watermark", "0.0001"),
        ("set_vm_memory_high_watermark", "0.4"),
    ),
    "disk": (("set_disk_free_limit", "100000000GB"), ("set_disk_free_limit", "50MB")),
}


@dataclass
class Answer:
    event_id: str
    started: float
    seconds: float
    status: int


@pytest.mark.parametrize("alarm", sorted(ALARMS))
async def test_an_alarm_blocks_publishers_503_then_204_when_it_clears(
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
    single_node: SingleNode,
    alarm: str,
) -> None:
    """Under an alarm: 503 within the publish timeout and /readyz 503; after it: 204 and
    /readyz 200; every event answered 204 is on the queue."""
    raise_alarm, clear_alarm = ALARMS[alarm]
    prefix = unique_prefix()
    capture = f"{prefix}.capture"
    settings = make_settings(
        prefix,
        url=single_node.url,
        urls=(single_node.url,),
        publish_timeout_s=PUBLISH_TIMEOUT_S,
    )
    app = create_app(settings)
    client = await aiohttp_client(app)
    publisher = app[PUBLISHER]
    assert isinstance(publisher, Publisher)
    await asyncio.wait_for(publisher.wait_ready(), 30)
    async with connection_to([single_node.url]) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            capture, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(prefix, routing_key="#")
        raised = False
        try:
            answers: list[Answer] = []
            counter = itertools.count()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()

            async def sender() -> None:
                while not stop.is_set():
                    event_id = f"{alarm}-{next(counter)}"
                    body = json.dumps({**TEMPLATE, "id": event_id})
                    started = loop.time()
                    response = await client.post("/callbacks/camara", data=body, headers=HEADERS)
                    answers.append(
                        Answer(event_id, started, loop.time() - started, response.status)
                    )
                    if response.status != 204:
                        assert "Retry-After" in response.headers
                        await asyncio.sleep(0.05)  # a retrying sender backs off a little

            def answered_after(moment: float, status: int) -> list[Answer]:
                return [a for a in answers if a.status == status and a.started > moment]

            senders = [asyncio.create_task(sender()) for _ in range(4)]
            await eventually(lambda: len(answered_after(0, 204)) >= 50, 20, "accepted events")
            await asyncio.to_thread(single_node.ctl, *raise_alarm)
            raised = True
            raised_at = loop.time()
            await eventually(lambda: bool(answered_after(raised_at, 503)), 15, "a 503")

            async def not_ready() -> bool:
                return (await client.get("/readyz")).status == 503

            await eventually(not_ready, 15, "/readyz 503 while blocked")
            blocked_at = loop.time()
            await eventually(
                lambda: len(answered_after(blocked_at, 503)) >= 8, 15, "503s while blocked"
            )
            assert not answered_after(blocked_at, 204), "204 while the broker blocks publishers"
            assert (await client.get("/readyz")).status == 503

            await asyncio.to_thread(single_node.ctl, *clear_alarm)
            raised = False
            cleared_at = loop.time()
            await eventually(
                lambda: len(answered_after(cleared_at, 204)) >= 20, 30, "204 after the alarm"
            )

            async def ready() -> bool:
                return (await client.get("/readyz")).status == 200

            await eventually(ready, 10, "/readyz 200 after the alarm")
            stop.set()
            await asyncio.gather(*senders)

            assert {a.status for a in answers} <= {204, 503}
            slowest = max(a.seconds for a in answers if a.status == 503)
            assert slowest < PUBLISH_TIMEOUT_S + 0.5, f"a 503 took {slowest:.2f}s"
            accepted = {a.event_id for a in answers if a.status == 204}
            lost = await missing_ids(queue, accepted, 30)
            assert not lost, f"lost {len(lost)} of {len(accepted)} accepted events"
        finally:
            if raised:
                await asyncio.to_thread(single_node.ctl, *clear_alarm)
            await delete_prefix(connection, prefix, capture)
