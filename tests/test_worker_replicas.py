"""Two replicas of a built-in worker on one queue, with duplicates and shuffled order, end in
the same state as applying the events once, in time order."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from consumers import Event
from consumers.handlers import builtin_spec, reachability, roaming
from consumers.metrics import WorkerMetrics
from consumers.state import open_store
from gateway.cloudevent import rfc3339
from tests.worker_support import (
    Broker,
    as_received,
    eventually,
    make_settings,
    publish_events,
    queue_depth,
    running_worker,
    settled,
)

ROAMING = "org.camaraproject.device-roaming-status-subscriptions.v0."
REACHABILITY = "org.camaraproject.device-reachability-status-subscriptions.v0."


def generated_events(rng: random.Random, devices: int, per_device: int) -> list[dict[str, Any]]:
    """Roaming and reachability events for several devices at random (sometimes equal) times."""
    base = datetime(2025, 1, 1, tzinfo=UTC)
    events = []
    for d in range(devices):
        phone = f"+3670{d:07d}"
        for n in range(per_device):
            name = rng.choice(
                [
                    "roaming-on",
                    "roaming-off",
                    "roaming-change-country",
                    "reachability-data",
                    "reachability-sms",
                    "reachability-disconnected",
                ]
            )
            prefix = ROAMING if name.startswith("roaming") else REACHABILITY
            data: dict[str, Any] = {"device": {"phoneNumber": phone}, "subscriptionId": "s-1"}
            if name == "roaming-change-country":
                data.update(countryCode=rng.choice([208, 214, 262]), countryName=["XX"])
            events.append(
                {
                    "id": f"e-{d}-{n}",
                    "source": "https://notificationSendServer12.supertelco.com",
                    "type": prefix + name,
                    "specversion": "1.0",
                    "time": rfc3339(base + timedelta(seconds=rng.randint(0, 5))),
                    "partitionkey": phone,
                    "data": data,
                }
            )
    return events


@pytest.mark.slow
async def test_two_replicas_with_duplicates_and_shuffled_order(env: Broker, tmp_path: Path) -> None:
    """Every event twice, shuffled, over two roaming and two reachability replicas: the final
    device state equals one in-order application."""
    rng = random.Random(20261123)
    events = generated_events(rng, devices=8, per_device=8)
    deliveries = [as_received(e) for e in events + events]
    rng.shuffle(deliveries)

    reference = await open_store(f"sqlite:///{tmp_path}/reference.db")
    handlers = {
        "roaming": roaming.make_handler(reference),
        "reachability": reachability.make_handler(reference),
    }
    for event in sorted(events, key=lambda e: (e["time"], e["id"])):
        queue = "roaming" if event["type"].startswith(ROAMING) else "reachability"
        await handlers[queue](Event.from_dict(event))

    url = f"sqlite:///{tmp_path}/state.db"
    settings = make_settings(env.prefix, url, prefetch=4)
    specs = [builtin_spec(settings.amqp, name) for name in ("roaming", "reachability")]
    for spec in specs:
        env.track(spec.queue, settings)
    metrics = WorkerMetrics()
    channel = await env.channel()
    async with (
        running_worker(settings, specs[0], metrics=metrics),
        running_worker(settings, specs[0], metrics=metrics),
        running_worker(settings, specs[1], metrics=metrics),
        running_worker(settings, specs[1], metrics=metrics),
    ):
        await publish_events(channel, settings, deliveries)
        await eventually(
            lambda: sum(settled(metrics, spec.queue) for spec in specs) >= len(deliveries),
            what="all deliveries settled",
        )
    for spec in specs:
        assert await queue_depth(channel, spec.queue) == 0
        assert await queue_depth(channel, spec.queue + ".dlq") == 0

    store = await open_store(url)
    try:
        for d in range(8):
            phone = f"+3670{d:07d}"
            assert await store.device(phone) == await reference.device(phone)
    finally:
        await asyncio.gather(store.close(), reference.close())
