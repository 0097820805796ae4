"""Fixtures through the real ingress into the built-in workers: the state they end in."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumers.handlers import HANDLERS, builtin_spec
from consumers.state import StateStore, open_store
from consumers.worker import run_worker
from tests.broker import drain
from tests.conftest import FIXTURES, Ingress, IngressFactory

SUBSCRIPTION = "qs15-h556-rt89-1298"


@pytest.fixture
async def pipeline(
    make_ingress: IngressFactory, tmp_path: Path
) -> AsyncIterator[tuple[Ingress, StateStore]]:
    """The ingress plus the three built-in workers, in this process, on one SQLite store."""
    ingress = await make_ingress()
    settings = replace(
        ingress.settings, workers=replace(ingress.settings.workers, retry_backoff_s=(0.1,))
    )
    store = await open_store(f"sqlite:///{tmp_path / 'state.db'}")
    stop = asyncio.Event()
    ready = {name: asyncio.Event() for name in HANDLERS}
    workers = [
        asyncio.create_task(
            run_worker(
                settings,
                builtin_spec(settings.amqp, name),
                stop=stop,
                ready=ready[name],
                store=store,
            )
        )
        for name in HANDLERS
    ]
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in ready.values())), 20)
    yield ingress, store
    stop.set()
    await asyncio.gather(*workers)
    await store.close()


async def _eventually(
    probe: Callable[[], Awaitable[Any]], expected: Any, timeout: float = 15.0
) -> Any:
    """Poll ``probe`` until it returns ``expected`` or the deadline passes; return the last."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value == expected or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.05)  # deadline poll: the workers commit asynchronously


async def test_fixtures_end_in_the_right_state(pipeline: tuple[Ingress, StateStore]) -> None:
    """Every fixture through the ingress; the workers' state matches the newest events."""
    ingress, store = pipeline
    exchange = ingress.settings.amqp.exchange
    capture = await ingress.channel.get_queue(ingress.capture, ensure=False)
    await capture.unbind(exchange, "#")  # so only the built-in queues are bound
    for path in sorted(FIXTURES.glob("*.json")):
        status, body = await ingress.post_fixture(path)
        assert status == 204, (path.name, body)

    # Roaming: roaming-change-country (2023-01-19, id 123657) is the newest roaming event.
    roaming = await _eventually(
        lambda: _fields(store.device("+123456789"), "roaming", "country_code", "country_name"),
        (True, 214, ["ES"]),
    )
    assert roaming == (True, 214, ["ES"])
    device = await _eventually(
        lambda: _fields(store.device("+123456789"), "reachability_time"),
        ("2023-01-19T13:18:23.682Z",),
    )
    device = await store.device("+123456789")
    assert device is not None
    assert device["roaming_time"] == "2023-01-19T13:18:23.682Z"
    # The three reachability examples share id and time; any of them may win the tie.
    assert device["reachability"] in {"DATA", "SMS", "DISCONNECTED"}
    assert device["reachability_time"] == "2023-01-19T13:18:23.682Z"

    legacy = await _eventually(
        lambda: _fields(store.device("+123456787"), "reachability"), ("DATA",)
    )
    assert legacy == ("DATA",)

    # Lifecycle: the newest is the reachability subscription-ended of 2024-03-22.
    subscription = await _eventually(
        lambda: store.subscription(SUBSCRIPTION),
        {
            "subscription_id": SUBSCRIPTION,
            "api": "device-reachability-status-subscriptions",
            "status": "ENDED",
            "termination_reason": "SUBSCRIPTION_EXPIRED",
            "status_time": "2024-03-22T05:40:23.682Z",
        },
    )
    assert subscription["status"] == "ENDED"
    assert subscription["termination_reason"] == "SUBSCRIPTION_EXPIRED"

    inbound_id = json.loads((FIXTURES / "notify-inbound-sms.json").read_text())["id"]
    inbound = await _eventually(
        lambda: store.inbound(inbound_id),
        {
            "id": inbound_id,
            "source_number": "+61412987654",
            "destination_number": "+61412345678",
            "received_time": "2017-05-14T12:15:30.000Z",
        },
    )
    assert inbound["source_number"] == "+61412987654"

    # QoD and e-mail receipts have no built-in queue: they wait in <prefix>.unrouted.
    unrouted = await drain(ingress.channel, f"{exchange}.unrouted", 2)
    assert {m.routing_key for m in unrouted} == {
        "org.camaraproject.quality-on-demand.v1.qos-status-changed",
        "notify.email.delivery-status",
    }


async def _fields(row: Awaitable[dict[str, Any] | None], *names: str) -> tuple[Any, ...] | None:
    value = await row
    return None if value is None else tuple(value[name] for name in names)


async def test_sms_receipts_build_a_history(pipeline: tuple[Ingress, StateStore]) -> None:
    """SMS receipts in any order, with a resend, give one history entry per status."""
    ingress, store = pipeline
    receipt = json.loads((FIXTURES / "notify-delivery-email-delivered.json").read_text())
    sms = {**receipt, "id": "sms-1", "notification_type": "sms", "to": "+61412345678"}
    steps = [
        ("delivered", "2017-05-14T12:15:40.000000Z"),
        ("sending", "2017-05-14T12:15:31.000000Z"),
        ("delivered", "2017-05-14T12:15:40.000000Z"),
    ]
    for status, completed in steps:
        body = orjson.dumps({**sms, "status": status, "completed_at": completed})
        assert (await ingress.post("notify-status", body))[0] == 204
    expected = {
        "id": "sms-1",
        "notification_type": "sms",
        "status": "delivered",
        "status_time": "2017-05-14T12:15:40.000Z",
        "history": [
            {"status": "sending", "time": "2017-05-14T12:15:31.000Z", "event_id": "sms-1:sending"},
            {
                "status": "delivered",
                "time": "2017-05-14T12:15:40.000Z",
                "event_id": "sms-1:delivered",
            },
        ],
    }
    assert await _eventually(lambda: store.message("sms-1"), expected) == expected
