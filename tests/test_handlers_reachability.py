"""The built-in reachability handler: state from the type, every generation, lifecycle."""

from __future__ import annotations

from typing import Any

import pytest

from consumers import Unprocessable
from consumers.handlers import reachability
from consumers.state import StateStore
from tests.worker_support import apply_events, fixture, with_changes

NEW = "org.camaraproject.device-reachability-status-subscriptions.v0."
LEGACY = "org.camaraproject.device-status.v0."
SUBSCRIPTION = "qs15-h556-rt89-1298"


async def handle(store: StateStore, *events: dict[str, Any]) -> None:
    await apply_events(reachability.make_handler(store), *events)


@pytest.mark.parametrize(
    ("event_type", "expected"),
    [
        (NEW + "reachability-data", "DATA"),
        (NEW + "reachability-sms", "SMS"),
        (NEW + "reachability-disconnected", "DISCONNECTED"),
        (LEGACY + "connectivity-data", "DATA"),
        (LEGACY + "connectivity-sms", "SMS"),
        (LEGACY + "connectivity-disconnected", "DISCONNECTED"),
    ],
)
async def test_type_gives_reachability(store: StateStore, event_type: str, expected: str) -> None:
    """The state is in the type: reachability-* and legacy connectivity-* alike."""
    await handle(store, with_changes(fixture("camara-reachability-data"), type=event_type))
    assert await store.device("+123456789") == {
        "device": "+123456789",
        "roaming": None,
        "country_code": None,
        "country_name": None,
        "roaming_time": None,
        "reachability": expected,
        "reachability_time": "2023-01-19T13:18:23.682Z",
    }


async def test_legacy_fixture_uses_its_device(store: StateStore) -> None:
    """The legacy connectivity-data fixture sets DATA for its own phone number."""
    await handle(store, fixture("camara-legacy-device-status-connectivity-data"))
    assert (await store.device("+123456787") or {})["reachability"] == "DATA"


async def test_newer_event_wins_and_duplicates_change_nothing(store: StateStore) -> None:
    """Out of order and repeated events leave the state of the latest one."""
    early = with_changes(fixture("camara-reachability-sms"), id="a", time="2023-01-18T00:00:00Z")
    late = with_changes(fixture("camara-reachability-disconnected"), id="b")
    await handle(store, late, early, late, early)
    assert (await store.device("+123456789") or {})["reachability"] == "DISCONNECTED"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("camara-subscription-started-reachability", ("ACTIVE", None)),
        ("camara-subscription-updated-reachability", ("ACTIVE", None)),
        ("camara-subscription-ended-reachability", ("ENDED", "SUBSCRIPTION_EXPIRED")),
        ("camara-subscription-ends-reachability", ("ENDED", "SUBSCRIPTION_EXPIRED")),
    ],
)
async def test_lifecycle(store: StateStore, name: str, expected: tuple[str, str | None]) -> None:
    """Lifecycle events set the subscription, with api device-reachability-status-subscriptions."""
    await handle(store, fixture(name))
    found = await store.subscription(SUBSCRIPTION)
    assert found is not None
    assert (found["status"], found["termination_reason"]) == expected
    assert found["api"] == "device-reachability-status-subscriptions"


async def test_state_event_without_device_is_unprocessable(store: StateStore) -> None:
    """A reachability event naming no device cannot be applied: Unprocessable."""
    event = fixture("camara-reachability-sms")
    del event["data"]["device"]
    with pytest.raises(Unprocessable, match="names no device"):
        await handle(store, event)


async def test_partitionkey_is_the_device_key(store: StateStore) -> None:
    """The gateway's partitionkey wins over data.device."""
    await handle(store, with_changes(fixture("camara-reachability-sms"), partitionkey="dev-9"))
    assert (await store.device("dev-9") or {})["reachability"] == "SMS"
    assert await store.device("+123456789") is None


async def test_unknown_type_changes_nothing(store: StateStore) -> None:
    """A type the reachability worker does not know is acknowledged without change."""
    await handle(
        store, with_changes(fixture("camara-reachability-sms"), type=NEW + "reachability-5g")
    )
    assert await store.device("+123456789") is None
