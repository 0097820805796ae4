"""The three built-in workers end to end: fixture events published to the exchange the way
the ingress does, consumed from RabbitMQ, and the state they leave (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from consumers.handlers import builtin_spec
from consumers.state import StateStore, open_store
from tests.worker_support import (
    Broker,
    as_received,
    delivered,
    fixture,
    make_settings,
    notify_inbound,
    notify_status,
    queue_depth,
    run_until_settled,
    sqlite_url,
    with_changes,
)

DEVICE = "+123456789"
SUBSCRIPTION = "qs15-h556-rt89-1298"
ROAMING_FIXTURES = [
    "camara-roaming-status",
    "camara-roaming-on",
    "camara-roaming-off",
    "camara-roaming-change-country",
    "camara-legacy-device-status-roaming-status",
    "camara-subscription-started-roaming",
    "camara-subscription-updated-roaming",
    "camara-subscription-ended-roaming",
    "camara-subscription-ends-roaming",
]


async def _run_builtin(
    env: Broker, name: str, state_url: str, events: list[dict[str, Any]]
) -> StateStore:
    settings = make_settings(env.prefix, state_url)
    spec = builtin_spec(settings.amqp, name)
    env.track(spec.queue, settings)
    channel = await env.channel()
    metrics = await run_until_settled(settings, spec, channel, [as_received(e) for e in events])
    assert delivered(metrics, spec.queue, "dead_lettered") == 0
    assert delivered(metrics, spec.queue, "ok") == len(events)
    assert await queue_depth(channel, spec.queue) == 0
    return await open_store(state_url)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_roaming_worker_applies_the_fixtures(
    env: Broker, tmp_path: Path, postgres_url: str, backend: str
) -> None:
    """The roaming worker leaves the latest roaming state; the subscription stays ENDED (a
    later subscription-started does not revive it, contract §5)."""
    url = sqlite_url(tmp_path) if backend == "sqlite" else postgres_url
    store = await _run_builtin(env, "roaming", url, [fixture(n) for n in ROAMING_FIXTURES])
    try:
        assert await store.device(DEVICE) == {
            "device": DEVICE,
            "roaming": True,
            "country_code": 214,
            "country_name": ["ES"],
            "roaming_time": "2023-01-19T13:18:23.682Z",
            "reachability": None,
            "reachability_time": None,
        }
        assert await store.subscription(SUBSCRIPTION) == {
            "subscription_id": SUBSCRIPTION,
            "api": "device-roaming-status-subscriptions",
            "status": "ENDED",
            "termination_reason": "SUBSCRIPTION_EXPIRED",
            "status_time": "2023-01-19T13:18:23.682Z",
        }
    finally:
        await store.close()


async def test_reachability_worker_applies_the_fixtures(env: Broker, tmp_path: Path) -> None:
    """The reachability worker maps every type to DATA/SMS/DISCONNECTED; latest wins."""
    events = [
        with_changes(fixture("camara-reachability-data"), id="r-data"),
        with_changes(
            fixture("camara-reachability-sms"), id="r-sms", time="2023-01-20T13:18:23.682Z"
        ),
        with_changes(
            fixture("camara-reachability-disconnected"),
            id="r-disc",
            time="2023-01-18T13:18:23.682Z",
        ),
        fixture("camara-legacy-device-status-connectivity-data"),  # device +123456787
        fixture("camara-subscription-started-reachability"),
        fixture("camara-subscription-updated-reachability"),
        fixture("camara-subscription-ended-reachability"),
        fixture("camara-subscription-ends-reachability"),
    ]
    store = await _run_builtin(env, "reachability", sqlite_url(tmp_path), events)
    try:
        device = await store.device(DEVICE)
        assert device is not None
        assert (device["reachability"], device["reachability_time"]) == (
            "SMS",
            "2023-01-20T13:18:23.682Z",
        )
        legacy = await store.device("+123456787")
        assert legacy is not None
        assert legacy["reachability"] == "DATA"
        assert await store.subscription(SUBSCRIPTION) == {
            "subscription_id": SUBSCRIPTION,
            "api": "device-reachability-status-subscriptions",
            "status": "ENDED",
            "termination_reason": "SUBSCRIPTION_EXPIRED",
            "status_time": "2024-03-22T05:40:23.682Z",
        }
    finally:
        await store.close()


async def test_sms_worker_records_receipts_and_inbound_texts(env: Broker, tmp_path: Path) -> None:
    """Delivery receipts build each message's history; an inbound SMS is kept (without text)."""
    created, done = "2017-05-14T12:15:30.000000Z", "2017-05-14T12:16:00.000000Z"
    events = [
        notify_status("m-1", "delivered", created, done),
        notify_status("m-1", "sending", created, None),
        notify_status("m-1", "delivered", created, done),  # Notify resent the callback
        notify_status("m-2", "permanent-failure", created, done),
        notify_inbound(),
    ]
    store = await _run_builtin(env, "sms", sqlite_url(tmp_path), events)
    try:
        assert await store.message("m-1") == {
            "id": "m-1",
            "notification_type": "sms",
            "status": "delivered",
            "status_time": "2017-05-14T12:16:00.000Z",
            "history": [
                {
                    "status": "sending",
                    "time": "2017-05-14T12:15:30.000Z",
                    "event_id": "m-1:sending",
                },
                {
                    "status": "delivered",
                    "time": "2017-05-14T12:16:00.000Z",
                    "event_id": "m-1:delivered",
                },
            ],
        }
        assert (await store.message("m-2") or {})["status"] == "permanent-failure"
        assert await store.inbound("f3a1b2c4-5d6e-4f70-8a9b-0c1d2e3f4a5b") == {
            "id": "f3a1b2c4-5d6e-4f70-8a9b-0c1d2e3f4a5b",
            "source_number": "+61412987654",
            "destination_number": "+61412345678",
            "received_time": "2017-05-14T12:15:30.000Z",
        }
    finally:
        await store.close()
