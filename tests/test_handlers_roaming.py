"""The built-in roaming handler: every event generation, device keys, times, lifecycle."""

from __future__ import annotations

from typing import Any

import pytest

from consumers import Event, Unprocessable
from consumers.handlers import builtin_spec, roaming
from consumers.handlers.camara import api_name, device_key
from consumers.state import StateStore
from tests.worker_support import apply_events, fixture, with_changes

DEVICE = "+123456789"
SUBSCRIPTION = "qs15-h556-rt89-1298"
T17, T18, T19 = (f"2023-01-{day}T13:18:23.682Z" for day in (17, 18, 19))


async def handle(store: StateStore, *events: dict[str, Any]) -> None:
    await apply_events(roaming.make_handler(store), *events)


def device(
    roaming: bool | None, code: int | None, names: list[str] | None, time: str
) -> dict[str, Any]:
    return {
        "device": DEVICE,
        "roaming": roaming,
        "country_code": code,
        "country_name": names,
        "roaming_time": time,
        "reachability": None,
        "reachability_time": None,
    }


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("camara-roaming-status", device(True, None, None, T17)),
        ("camara-roaming-on", device(True, None, None, T19)),
        ("camara-roaming-off", device(False, None, None, T18)),
        ("camara-roaming-change-country", device(True, 214, ["ES"], T19)),
        ("camara-legacy-device-status-roaming-status", device(True, 208, ["FR"], T17)),
    ],
)
async def test_roaming_fixture_sets_device_state(
    store: StateStore, name: str, expected: dict[str, Any]
) -> None:
    """Each roaming fixture alone gives the device state the contract describes."""
    await handle(store, fixture(name))
    assert await store.device(DEVICE) == expected


@pytest.mark.parametrize(
    "prefix",
    [
        "org.camaraproject.device-roaming-status-subscriptions.v0",
        "org.camaraproject.roaming-status-subscriptions.v0",
        "org.camaraproject.device-status.v0",
    ],
)
async def test_every_type_generation_is_understood(store: StateStore, prefix: str) -> None:
    """roaming-off under each API generation's type prefix sets roaming false."""
    await handle(store, with_changes(fixture("camara-roaming-off"), type=f"{prefix}.roaming-off"))
    assert await store.device(DEVICE) == device(False, None, None, T18)


async def test_roaming_status_with_explicit_countries(store: StateStore) -> None:
    """roaming-status carries roaming, countryCode and countryName when given."""
    event = fixture("camara-roaming-status")
    event["data"].update(countryCode=262, countryName=["DE"])
    await handle(store, event)
    assert await store.device(DEVICE) == device(True, 262, ["DE"], T17)


async def test_later_event_wins_whatever_the_order(store: StateStore) -> None:
    """Applying the roaming fixtures in reverse order (and twice) ends like in time order."""
    names = [
        "camara-roaming-status",
        "camara-roaming-off",
        "camara-roaming-on",
        "camara-roaming-change-country",
    ]
    events = [fixture(name) for name in names]
    await handle(store, *reversed(events), *events)
    # roaming-on and change-country share a time: the greater event id (123657) wins.
    assert await store.device(DEVICE) == device(True, 214, ["ES"], T19)


@pytest.mark.parametrize(
    ("name", "changes", "expected"),
    [
        ("camara-subscription-started-roaming", {}, ("ACTIVE", None)),
        ("camara-subscription-updated-roaming", {}, ("ACTIVE", None)),
        (
            "camara-subscription-updated-roaming",
            {"updateReason": "SUBSCRIPTION_INACTIVE"},
            ("INACTIVE", None),
        ),
        ("camara-subscription-ended-roaming", {}, ("ENDED", "SUBSCRIPTION_EXPIRED")),
        (
            "camara-subscription-ends-roaming",
            {"terminationReason": "SOMETHING_NEW"},
            ("ENDED", "SOMETHING_NEW"),
        ),
    ],
)
async def test_lifecycle_events_set_subscription_status(
    store: StateStore, name: str, changes: dict[str, str], expected: tuple[str, str | None]
) -> None:
    """started/updated/ended/ends give ACTIVE/INACTIVE/ENDED, with any termination reason."""
    event = fixture(name)
    event["data"].update(changes)
    await handle(store, event)
    found = await store.subscription(SUBSCRIPTION)
    assert found is not None
    assert (found["status"], found["termination_reason"]) == expected
    assert found["api"] == "device-roaming-status-subscriptions"
    assert found["status_time"] == event["time"]
    assert await store.device(DEVICE) is None  # lifecycle events leave devices alone


async def test_legacy_subscription_ends_names_the_device_status_api(store: StateStore) -> None:
    """Legacy device-status subscription-ends ends a subscription of api device-status."""
    await handle(store, fixture("camara-legacy-device-status-subscription-ends"))
    found = await store.subscription(SUBSCRIPTION)
    assert found is not None
    assert (found["api"], found["status"]) == ("device-status", "ENDED")


async def test_lifecycle_event_without_device_is_fine(store: StateStore) -> None:
    """A lifecycle event needs only the subscription id."""
    event = fixture("camara-subscription-started-roaming")
    del event["data"]["device"]
    await handle(store, event)
    assert (await store.subscription(SUBSCRIPTION) or {})["status"] == "ACTIVE"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: e["data"].pop("device"), "names no device"),
        (lambda e: e["data"].update(roaming="yes"), "data.roaming"),
        (lambda e: e["data"].update(countryName=[1]), "countryName"),
        (lambda e: e.update(data=[1, 2]), "JSON object"),
        (lambda e: e.pop("time"), "neither 'time' nor 'gatewayreceived'"),
    ],
    ids=["no-device", "roaming-not-bool", "bad-country", "data-not-object", "no-time"],
)
async def test_unusable_device_event_is_unprocessable(
    store: StateStore, mutate: Any, message: str
) -> None:
    """A device-state event the handler cannot use raises Unprocessable (straight to DLQ)."""
    event = fixture("camara-roaming-status")
    mutate(event)
    with pytest.raises(Unprocessable, match=message):
        await handle(store, event)


async def test_unknown_update_reason_is_unprocessable(store: StateStore) -> None:
    """subscription-updated with a reason the worker does not know is not guessed at."""
    event = fixture("camara-subscription-updated-roaming")
    event["data"]["updateReason"] = "SUBSCRIPTION_PAUSED"
    with pytest.raises(Unprocessable, match="updateReason"):
        await handle(store, event)


async def test_unknown_type_is_acknowledged_without_change(store: StateStore) -> None:
    """An event type the roaming worker does not know changes nothing and does not fail."""
    event = with_changes(
        fixture("camara-roaming-on"),
        type="org.camaraproject.device-roaming-status-subscriptions.v0.roaming-teleported",
    )
    await handle(store, event)
    assert await store.device(DEVICE) is None


async def test_time_falls_back_to_gateway_received(store: StateStore) -> None:
    """Without ``time`` the gateway's receive time is the event time."""
    event = fixture("camara-roaming-on")
    del event["time"]
    event["gatewayreceived"] = "2025-05-05T05:05:05.000Z"
    await handle(store, event)
    assert (await store.device(DEVICE) or {})["roaming_time"] == "2025-05-05T05:05:05.000Z"


@pytest.mark.parametrize(
    ("event_device", "partitionkey", "expected"),
    [
        ({"phoneNumber": "+36721601234567", "ipv6Address": "2001:db8::1"}, None, "+36721601234567"),
        (
            {"networkAccessIdentifier": "123@domain.com", "ipv6Address": "2001:db8::1"},
            None,
            "123@domain.com",
        ),
        (
            {"ipv6Address": "2001:db8::1", "ipv4Address": {"publicAddress": "84.125.93.10"}},
            None,
            "2001:db8::1",
        ),
        (
            {"ipv4Address": {"publicAddress": "84.125.93.10", "publicPort": 59765}},
            None,
            "ipv4:84.125.93.10:59765",
        ),
        (
            {"ipv4Address": {"publicAddress": "84.125.93.10", "privateAddress": "10.1.2.3"}},
            None,
            "ipv4:84.125.93.10/10.1.2.3",
        ),
        ({"ipv4Address": {"publicAddress": "84.125.93.10"}}, None, None),
        ({"phoneNumber": 36721601234567}, None, "+36721601234567"),
        ({"phoneNumber": "+36721601234567"}, "key-from-gateway", "key-from-gateway"),
        ({"phoneNumber": "36721601234567"}, "36721601234567", "+36721601234567"),
        ({}, None, None),
    ],
)
def test_device_key(
    event_device: dict[str, Any], partitionkey: str | None, expected: str | None
) -> None:
    """partitionkey first (E.164 with +), else phone number, NAI, IPv6, IPv4 device key."""
    raw = with_changes(fixture("camara-roaming-on"), partitionkey=partitionkey)
    raw["data"]["device"] = event_device
    assert device_key(Event.from_dict(raw)) == expected


@pytest.mark.parametrize(
    ("event_type", "api"),
    [
        (
            "org.camaraproject.device-roaming-status-subscriptions.v0.subscription-ended",
            "device-roaming-status-subscriptions",
        ),
        (
            "org.camaraproject.roaming-status-subscriptions.v0.subscription-ends",
            "roaming-status-subscriptions",
        ),
        ("org.camaraproject.device-status.v0.subscription-ends", "device-status"),
        (
            "org.camaraproject.api.device-roaming-subscriptions.v1.subscription-ended",
            "device-roaming-subscriptions",
        ),
        ("weird.subscription-ended", "weird"),
    ],
)
def test_api_name_from_type(event_type: str, api: str) -> None:
    """The API name is the segment before the event version."""
    assert api_name(event_type) == api


def test_builtin_spec_uses_the_contract_queue_and_bindings() -> None:
    """builtin_spec('roaming') is <exchange>.roaming with the topology's bindings."""
    from gateway.settings import AmqpSettings
    from gateway.topology import BUILTIN_BINDINGS

    spec = builtin_spec(AmqpSettings(exchange="events"), "roaming")
    assert spec.queue == "events.roaming"
    assert spec.bindings == BUILTIN_BINDINGS["roaming"]
