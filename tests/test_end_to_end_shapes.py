"""Through ``event-gateway run`` (one real process: ingress and built-in workers): every case of
issue 11 and the public payloads of older API generations end in the state the contract says.

Posts go over HTTP to the process; the state is read from its SQLite file; a capture queue
bound to ``#`` shows what was published (``partitionkey``, ``xcorrelator``, types).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import pytest

from consumers.state import StateStore, open_store
from gateway.auth import hash_token
from tests.broker import AMQP_URL, delete_everything, unique_prefix
from tests.processes import GatewayProcess, wait_http_ready
from tests.tcp_proxy import free_port

GENERATIONS = Path(__file__).parent / "fixtures" / "generations"
TOKENS = {"camara": "e2e-camara", "notify-status": "e2e-status", "notify-inbound": "e2e-inbound"}
ROAMING = "org.camaraproject.device-roaming-status-subscriptions"
REACHABILITY = "org.camaraproject.device-reachability-status-subscriptions"
T1, T2 = "2026-11-30T10:00:00Z", "2026-11-30T10:00:01Z"
T1_TEXT, T2_TEXT = "2026-11-30T10:00:00.000Z", "2026-11-30T10:00:01.000Z"


@dataclass
class Running:
    """The running gateway, its state and a capture of everything it publishes."""

    session: aiohttp.ClientSession
    port: int
    store: StateStore
    capture: aio_pika.abc.AbstractQueue
    channel: aio_pika.abc.AbstractChannel
    prefix: str

    async def post(
        self,
        source: str,
        body: Any,
        content_type: str = "application/cloudevents+json",
        **headers: str,
    ) -> int:
        """POST ``body`` (JSON) to ``/callbacks/<source>``; the status."""
        async with self.session.post(
            f"http://127.0.0.1:{self.port}/callbacks/{source}",
            data=json.dumps(body).encode(),
            headers={
                "Authorization": f"Bearer {TOKENS[source]}",
                "Content-Type": content_type,
                **headers,
            },
        ) as response:
            return response.status

    async def captured(self, count: int) -> list[dict[str, Any]]:
        """The next ``count`` published events (bodies), in publish order."""
        got: list[dict[str, Any]] = []
        deadline = asyncio.get_running_loop().time() + 15
        while len(got) < count and asyncio.get_running_loop().time() < deadline:
            message = await self.capture.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.02)  # deadline poll on the broker
                continue
            got.append(json.loads(message.body))
        assert len(got) == count, got
        return got

    async def dead_lettered(self) -> int:
        """Messages in the built-in workers' dead-letter queues."""
        total = 0
        for name in ("roaming", "reachability", "sms"):
            queue = await self.channel.declare_queue(f"{self.prefix}.{name}.dlq", passive=True)
            total += queue.declaration_result.message_count or 0
        return total


def _config(path: Path, prefix: str, port: int, state_url: str) -> Path:
    tokens = {source: hash_token(token) for source, token in TOKENS.items()}
    adapters = {
        "camara": "camara",
        "notify-status": "notify-delivery-status",
        "notify-inbound": "notify-inbound-sms",
    }
    sources = "".join(
        f'\n[[sources]]\nname = "{name}"\nadapter = "{adapter}"\ntokens = ["{tokens[name]}"]\n'
        for name, adapter in adapters.items()
    )
    path.write_text(
        f"""
[http]
host = "127.0.0.1"
port = {port}

[amqp]
url = "{AMQP_URL}"
exchange = "{prefix}"

[state]
url = "{state_url}"

[workers]
retry_backoff_s = [0.05]
max_attempts = 2
{sources}""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Running]:
    """``event-gateway run`` on its own prefix and SQLite file, removed afterwards."""
    prefix, port = unique_prefix(), free_port()
    state_url = f"sqlite:///{tmp_path / 'state.db'}"
    config = _config(tmp_path / "gateway.toml", prefix, port, state_url)
    proc = GatewayProcess("run", ("run", "--config", str(config)), tmp_path).start()
    connection = await aio_pika.connect(AMQP_URL)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_http_ready(session, proc, port, timeout=30)
            channel = await connection.channel()
            capture = await channel.declare_queue(f"{prefix}.capture", auto_delete=False)
            await capture.bind(prefix, "#")
            store = await open_store(state_url)
            try:
                yield Running(session, port, store, capture, channel, prefix)
            finally:
                await store.close()
        assert await proc.terminate(20) == 0, proc.stderr_tail()
    finally:
        if proc.alive():
            proc.kill()
        await connection.close()
        await delete_everything(prefix, extra_queues=[f"{prefix}.capture"])


async def eventually(probe: Callable[[], Awaitable[Any]], expected: Any) -> Any:
    """Poll ``probe`` until it returns ``expected`` (15 s at most); the last value."""
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        value = await probe()
        if value == expected or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(0.05)  # deadline poll: the workers commit on their own


def field(read: Callable[[str], Awaitable[dict[str, Any] | None]], key: str, *names: str) -> Any:
    async def probe() -> Any:
        found = await read(key)
        return None if found is None else tuple(found[name] for name in names)

    return probe


def ce(
    event_type: str, event_id: str, time: str, data: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "https://notificationSendServer12.supertelco.com",
        "type": event_type,
        "time": time,
        "datacontenttype": "application/json",
        "data": data,
        **extra,
    }


def receipt(status: str, **times: str | None) -> dict[str, Any]:
    return {
        "id": "sms-e2e",
        "reference": None,
        "to": "07700912345",
        "status": status,
        "notification_type": "sms",
        "created_at": "2026-11-30T10:00:00.000000Z",
        "completed_at": None,
        "sent_at": None,
        **times,
    }


async def test_every_case_of_the_issue(gateway: Running) -> None:
    """ENDED ties and revivals, NAT devices, roaming-on after roaming-status, null completed_at,
    same id from two sources, v1 types, NaC shapes, long ids, x-correlator, phone numbers
    without +, qos-provisioning keys, Notify complaints and returned letters."""
    g, sub = gateway, {"subscriptionId": "sub-e2e"}
    phone = {"device": {"phoneNumber": "+36721601234567"}}
    posts = [
        # ENDED wins a tie in time (the started id sorts after the ended one) ...
        (
            "camara",
            ce(
                f"{ROAMING}.v0.subscription-ended",
                "a-end",
                T1,
                {**sub, "terminationReason": "MAX_EVENTS_REACHED"},
            ),
        ),
        (
            "camara",
            ce(
                f"{ROAMING}.v0.subscription-started",
                "z-start",
                T1,
                {**sub, "initiationReason": "SUBSCRIPTION_CREATED"},
            ),
        ),
        # ... and a later subscription-updated, of a v1 type, does not revive it.
        (
            "camara",
            ce(
                f"{ROAMING}.v1.subscription-updated",
                "upd",
                T2,
                {**sub, "updateReason": "SUBSCRIPTION_ACTIVE"},
            ),
        ),
        # Two devices behind one carrier-grade NAT.
        (
            "camara",
            ce(
                f"{REACHABILITY}.v0.reachability-data",
                "nat-1",
                T1,
                {
                    "subscriptionId": "s",
                    "device": {
                        "ipv4Address": {
                            "publicAddress": "84.125.93.10",
                            "privateAddress": "10.0.0.1",
                        }
                    },
                },
            ),
        ),
        (
            "camara",
            ce(
                f"{REACHABILITY}.v0.reachability-sms",
                "nat-2",
                T1,
                {
                    "subscriptionId": "s",
                    "device": {
                        "ipv4Address": {"publicAddress": "84.125.93.10", "publicPort": 59765}
                    },
                },
            ),
        ),
        # One move: roaming-status with the country, then roaming-on of the same time.
        (
            "camara",
            ce(
                f"{ROAMING}.v1.roaming-status",
                "move-a",
                T1,
                {
                    **phone,
                    "subscriptionId": "s",
                    "roaming": True,
                    "countryCode": 208,
                    "countryName": ["FR"],
                },
            ),
        ),
        ("camara", ce(f"{ROAMING}.v1.roaming-on", "move-z", T1, {**phone, "subscriptionId": "s"})),
        # The same id from two sources is two events; the order of arrival does not matter.
        (
            "camara",
            ce(
                f"{REACHABILITY}.v0.reachability-sms",
                "dup",
                T1,
                {"subscriptionId": "s", "device": {"phoneNumber": "+4911"}},
                source="/b",
            ),
        ),
        (
            "camara",
            ce(
                f"{REACHABILITY}.v0.reachability-data",
                "dup",
                T1,
                {"subscriptionId": "s", "device": {"phoneNumber": "+4911"}},
                source="/a",
            ),
        ),
        (
            "camara",
            ce(
                f"{REACHABILITY}.v0.reachability-data",
                "dup",
                T1,
                {"subscriptionId": "s", "device": {"phoneNumber": "+4922"}},
                source="/a",
            ),
        ),
        (
            "camara",
            ce(
                f"{REACHABILITY}.v0.reachability-sms",
                "dup",
                T1,
                {"subscriptionId": "s", "device": {"phoneNumber": "+4922"}},
                source="/b",
            ),
        ),
        # An id of 256 characters (CAMARA allows it).
        (
            "camara",
            ce(
                f"{REACHABILITY}.v0.reachability-disconnected",
                "x" * 256,
                T1,
                {"subscriptionId": "s", "device": {"phoneNumber": "+4933"}},
            ),
        ),
    ]
    for source, body in posts:
        assert await g.post(source, body) == 204, body["id"]

    # Network as Code's hybrid body whose data has no subscriptionId.
    hybrid = ce(
        "org.camaraproject.device-status.v0.subscription-ends",
        "nac-1",
        T1,
        {"device": {"phoneNumber": "36701234567"}, "terminationReason": "SUBSCRIPTION_EXPIRED"},
    )
    hybrid |= {
        "eventSubscriptionId": "nac-sub",
        "event": {"eventType": "SUBSCRIPTION_ENDS", "eventTime": T1},
    }
    assert await g.post("camara", hybrid, "application/json") == 204
    # The older NaC body: CONNECTIVITY + deviceStatus, with an x-correlator.
    older = {
        "eventSubscriptionId": "nac-sub-2",
        "event": {
            "eventType": "CONNECTIVITY",
            "eventTime": T1,
            "eventDetail": {
                "device": {"phoneNumber": "36701234568"},
                "deviceStatus": "UNREACHABLE",
            },
        },
    }
    assert await g.post("camara", older, "application/json", **{"x-correlator": "corr-1"}) == 204
    # qos-provisioning is keyed by its assignment.
    provisioning = json.loads((GENERATIONS / "qos-provisioning-v0-status-changed.json").read_text())
    assert await g.post("camara", provisioning) == 204
    # Notify: delivered with completed_at null, then (later) sending; inbound without +.
    assert await g.post("notify-status", receipt("delivered"), "application/json") == 204
    assert (
        await g.post(
            "notify-status",
            receipt("sending", sent_at="2026-11-30T10:00:05.000000Z"),
            "application/json",
        )
        == 204
    )
    inbound = {
        "id": "in-e2e",
        "source_number": "447700912345",
        "destination_number": "07700987654",
        "message": "hi",
        "date_received": "2026-11-30T10:00:00.000000Z",
    }
    assert await g.post("notify-inbound", inbound, "application/json") == 204
    complaint = {
        "notification_id": "n-1",
        "complaint_id": "c-1",
        "reference": None,
        "to": "a@b.c",
        "complaint_date": "2026-11-30T10:00:00.000000Z",
    }
    returned = {
        "notification_id": "n-2",
        "reference": None,
        "date_sent": "2026-11-29T10:00:00.000000Z",
    }
    assert await g.post("notify-status", complaint, "application/json") == 204
    assert await g.post("notify-status", returned, "application/json") == 204

    store = g.store
    assert await eventually(
        field(store.subscription, "sub-e2e", "status", "status_time"), ("ENDED", T1_TEXT)
    ) == ("ENDED", T1_TEXT)
    assert await eventually(
        field(store.device, "ipv4:84.125.93.10/10.0.0.1", "reachability"), ("DATA",)
    ) == ("DATA",)
    assert await eventually(
        field(store.device, "ipv4:84.125.93.10:59765", "reachability"), ("SMS",)
    ) == ("SMS",)
    assert await store.device("84.125.93.10") is None
    move = ("roaming", "country_code", "country_name")
    assert await eventually(field(store.device, "+36721601234567", *move), (True, 208, ["FR"])) == (
        True,
        208,
        ["FR"],
    )
    assert await eventually(field(store.device, "+4911", "reachability"), ("SMS",)) == ("SMS",)
    assert await eventually(field(store.device, "+4922", "reachability"), ("SMS",)) == ("SMS",)
    assert await eventually(field(store.device, "+4933", "reachability"), ("DISCONNECTED",)) == (
        "DISCONNECTED",
    )
    assert await eventually(field(store.subscription, "nac-sub", "status"), ("ENDED",)) == (
        "ENDED",
    )
    assert await eventually(
        field(store.device, "+36701234568", "reachability"), ("DISCONNECTED",)
    ) == ("DISCONNECTED",)
    message = await eventually(
        field(store.message, "sms-e2e", "status", "status_time"), ("delivered", T1_TEXT)
    )
    assert message == ("delivered", T1_TEXT)
    history = (await store.message("sms-e2e") or {})["history"]
    assert [entry["status"] for entry in history] == ["delivered", "sending"]
    assert await eventually(field(store.inbound, "in-e2e", "source_number"), ("447700912345",)) == (
        "447700912345",
    )
    assert await g.dead_lettered() == 0

    published = {event["id"]: event for event in await g.captured(len(posts) + 8)}
    assert published["nac-1"]["data"]["subscriptionId"] == "nac-sub"
    [older_event] = [
        e for e in published.values() if e["type"].endswith("connectivity-disconnected")
    ]
    assert (older_event["xcorrelator"], older_event["partitionkey"]) == ("corr-1", "+36701234568")
    assert published[provisioning["id"]]["partitionkey"] == provisioning["data"]["assignmentId"]
    assert published["in-e2e"]["partitionkey"] == "+447700912345"
    assert published["c-1"]["type"] == "notify.email.complaint"
    assert published["n-2:returned"]["type"] == "notify.letter.returned"


def generation(name: str, **changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((GENERATIONS / f"{name}.json").read_text())
    return {**event, **changes}


async def test_older_generations_end_in_the_right_state(gateway: Running) -> None:
    """roaming-status-subscriptions v0.6.x, device-status v0.5.x (phone numbers as numbers,
    without +), QoD v0.10 and qos-provisioning examples as published in their specs."""
    g, store = gateway, gateway.store
    v06 = [
        "roaming-status-subscriptions-v0.6-roaming-status",
        "roaming-status-subscriptions-v0.6-roaming-off",
        "roaming-status-subscriptions-v0.6-roaming-on",
        "roaming-status-subscriptions-v0.6-roaming-change-country",
        "roaming-status-subscriptions-v0.6-subscription-ends",
    ]
    for name in v06:
        assert await g.post("camara", generation(name)) == 204, name
    roaming = ("roaming", "country_code", "country_name", "roaming_time")
    changed = (True, 214, ["ES"], "2023-01-19T13:18:23.682Z")
    assert await eventually(field(store.device, "+123456789", *roaming), changed) == changed
    assert await eventually(field(store.device, "+123456788", "roaming"), (False,)) == (False,)
    assert await eventually(field(store.device, "+123456787", "roaming"), (True,)) == (True,)
    ended = ("ENDED", "roaming-status-subscriptions")
    assert (
        await eventually(field(store.subscription, "qs15-h556-rt89-1298", "status", "api"), ended)
        == ended
    )

    # device-status v0.5.x reuses the same ids and source: give this generation its own ids.
    v05 = [
        "device-status-v0.5-roaming-status",
        "device-status-v0.5-roaming-change-country",
        "device-status-v0.5-connectivity-disconnected",
        "device-status-v0.5-subscription-ends",
    ]
    for name in v05:
        event = generation(name)
        assert await g.post("camara", {**event, "id": "v05-" + event["id"]}) == 204, name
    assert await eventually(
        field(store.device, "+123456787", "reachability"), ("DISCONNECTED",)
    ) == ("DISCONNECTED",)
    assert await eventually(
        field(store.subscription, "qs15-h556-rt89-1298", "api"), ("device-status",)
    ) == ("device-status",)
    assert await store.device("123456789") is None

    for name in ("qod-v0.10-qos-status-changed", "qos-provisioning-v0-status-changed"):
        assert await g.post("camara", generation(name)) == 204, name
    published = await g.captured(len(v06) + len(v05) + 2)
    keys = {event["type"]: event.get("partitionkey") for event in published}
    assert (
        keys["org.camaraproject.qod.v0.qos-status-changed"]
        == "123e4567-e89b-12d3-a456-426614174000"
    )
    assert (
        keys["org.camaraproject.qos-provisioning.v0.status-changed"]
        == "123e4567-e89b-12d3-a456-426614174000"
    )
    assert keys["org.camaraproject.device-status.v0.roaming-status"] == "+123456789"
    assert await g.dead_lettered() == 0
