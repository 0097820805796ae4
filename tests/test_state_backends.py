"""Each kind of state update against both backends: shapes, idempotency, older events."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone

import pytest

from consumers.state import StateStore
from tests.state_fixtures import (  # noqa: F401 - pytest fixtures, registered by import
    T0,
    pg_admin_fixture,
    pg_url_fixture,
    state_url_fixture,
    store_fixture,
    stored_inbound_text,
)

LATER = T0 + timedelta(days=1)
EARLIER = T0 - timedelta(days=1)
DEVICE = "+123456789"


async def test_roaming_round_trip(store: StateStore) -> None:
    """A roaming update is stored and shown in the contract's device shape."""
    assert await store.update_roaming(
        DEVICE, roaming=True, country_code=214, country_name=["ES"], time=T0, event_id="123654"
    )
    assert await store.device(DEVICE) == {
        "device": DEVICE,
        "roaming": True,
        "country_code": 214,
        "country_name": ["ES"],
        "roaming_time": "2023-01-17T13:18:23.682Z",
        "reachability": None,
        "reachability_time": None,
    }


async def test_roaming_off_without_country_clears_it(store: StateStore) -> None:
    """roaming=False with no country stores country_code and country_name as null."""
    await store.update_roaming(
        DEVICE, roaming=True, country_code=214, country_name=["ES"], time=T0, event_id="1"
    )
    assert await store.update_roaming(
        DEVICE, roaming=False, country_code=None, country_name=None, time=LATER, event_id="2"
    )
    device = await store.device(DEVICE)
    assert device is not None
    assert (device["roaming"], device["country_code"], device["country_name"]) == (
        False,
        None,
        None,
    )
    assert device["roaming_time"] == "2023-01-18T13:18:23.682Z"


async def test_empty_country_name_is_kept(store: StateStore) -> None:
    """An MCC with no country mapping keeps its empty array, distinct from null."""
    await store.update_roaming(
        DEVICE, roaming=True, country_code=999, country_name=[], time=T0, event_id="1"
    )
    device = await store.device(DEVICE)
    assert device is not None
    assert device["country_name"] == []


@pytest.mark.parametrize("value", ["DATA", "SMS", "DISCONNECTED"])
async def test_reachability_round_trip(store: StateStore, value: str) -> None:
    """A reachability update is stored and shown; the roaming group stays unknown."""
    assert await store.update_reachability(DEVICE, reachability=value, time=T0, event_id="1")
    assert await store.device(DEVICE) == {
        "device": DEVICE,
        "roaming": None,
        "country_code": None,
        "country_name": None,
        "roaming_time": None,
        "reachability": value,
        "reachability_time": "2023-01-17T13:18:23.682Z",
    }


async def test_device_groups_are_independent(store: StateStore) -> None:
    """A newer event in one group neither blocks nor overwrites the other group."""
    await store.update_reachability(DEVICE, reachability="SMS", time=LATER, event_id="r")
    assert await store.update_roaming(
        DEVICE, roaming=True, country_code=214, country_name=["ES"], time=T0, event_id="a"
    )
    assert await store.update_reachability(
        DEVICE, reachability="DATA", time=LATER + timedelta(seconds=1), event_id="r2"
    )
    device = await store.device(DEVICE)
    assert device is not None
    assert (device["roaming"], device["roaming_time"]) == (True, "2023-01-17T13:18:23.682Z")
    assert (device["reachability"], device["reachability_time"]) == (
        "DATA",
        "2023-01-18T13:18:24.682Z",
    )


async def test_subscription_round_trip(store: StateStore) -> None:
    """Subscription lifecycle events replace the row; a newer one clears the old reason."""
    api = "device-roaming-status-subscriptions"
    assert await store.update_subscription(
        "qs15",
        api=api,
        status="ENDED",
        termination_reason="SUBSCRIPTION_EXPIRED",
        time=T0,
        event_id="123658",
    )
    assert await store.subscription("qs15") == {
        "subscription_id": "qs15",
        "api": api,
        "status": "ENDED",
        "termination_reason": "SUBSCRIPTION_EXPIRED",
        "status_time": "2023-01-17T13:18:23.682Z",
    }
    assert await store.update_subscription(
        "qs15", api=api, status="ACTIVE", termination_reason=None, time=LATER, event_id="1"
    )
    subscription = await store.subscription("qs15")
    assert subscription is not None
    assert (subscription["status"], subscription["termination_reason"]) == ("ACTIVE", None)


async def test_message_history(store: StateStore) -> None:
    """Each status appears once, oldest first; the current status is the newest entry."""
    message_id = "740e5834"
    assert await store.record_message_status(
        message_id, notification_type="sms", status="delivered", time=LATER, event_id="m:delivered"
    )
    assert await store.record_message_status(
        message_id, notification_type="sms", status="sending", time=T0, event_id="m:sending"
    )
    assert await store.message(message_id) == {
        "id": message_id,
        "notification_type": "sms",
        "status": "delivered",
        "status_time": "2023-01-18T13:18:23.682Z",
        "history": [
            {"status": "sending", "time": "2023-01-17T13:18:23.682Z", "event_id": "m:sending"},
            {"status": "delivered", "time": "2023-01-18T13:18:23.682Z", "event_id": "m:delivered"},
        ],
    }


async def test_message_status_seen_twice_keeps_earliest(store: StateStore) -> None:
    """A status reported again later keeps its first time; an earlier report replaces it."""
    message_id = "m"
    await store.record_message_status(
        message_id, notification_type="sms", status="sending", time=T0, event_id="b"
    )
    assert not await store.record_message_status(
        message_id, notification_type="sms", status="sending", time=LATER, event_id="c"
    )
    assert await store.record_message_status(
        message_id, notification_type="sms", status="sending", time=T0, event_id="a"
    )
    message = await store.message(message_id)
    assert message is not None
    assert message["history"] == [
        {"status": "sending", "time": "2023-01-17T13:18:23.682Z", "event_id": "a"}
    ]


async def test_message_current_status_tie_broken_by_event_id(store: StateStore) -> None:
    """Two statuses at the same time: the one with the greater event id is current."""
    for status, event_id in (("temporary-failure", "x:b"), ("delivered", "x:a")):
        await store.record_message_status(
            "x", notification_type="sms", status=status, time=T0, event_id=event_id
        )
    message = await store.message("x")
    assert message is not None
    assert message["status"] == "temporary-failure"
    assert [entry["event_id"] for entry in message["history"]] == ["x:a", "x:b"]


async def test_inbound_first_write_wins(store: StateStore) -> None:
    """An inbound SMS is kept once and shown without its text; later writes change nothing."""
    assert await store.record_inbound_sms(
        "in-1",
        source_number="+61412987654",
        destination_number="+61412345678",
        message="Hello Notify!",
        received_time=T0,
        event_id="in-1",
    )
    assert not await store.record_inbound_sms(
        "in-1",
        source_number="+61400000000",
        destination_number=None,
        message="other",
        received_time=LATER,
        event_id="in-1",
    )
    assert await store.inbound("in-1") == {
        "id": "in-1",
        "source_number": "+61412987654",
        "destination_number": "+61412345678",
        "received_time": "2023-01-17T13:18:23.682Z",
    }


async def test_inbound_without_optional_fields(store: StateStore) -> None:
    """Missing inbound fields are null."""
    await store.record_inbound_sms(
        "in-2",
        source_number=None,
        destination_number=None,
        message=None,
        received_time=None,
        event_id="in-2",
    )
    assert await store.inbound("in-2") == {
        "id": "in-2",
        "source_number": None,
        "destination_number": None,
        "received_time": None,
    }


async def test_inbound_text_is_stored(store: StateStore, state_url: str) -> None:
    """The message text is in the database even though it is never shown."""
    await store.record_inbound_sms(
        "in-3",
        source_number=None,
        destination_number=None,
        message="Hello Notify!",
        received_time=T0,
        event_id="in-3",
    )
    assert await stored_inbound_text(state_url, "in-3") == "Hello Notify!"


async def test_unknown_keys_are_none(store: StateStore) -> None:
    """Reading something never written gives None."""
    assert await store.device("+1999") is None
    assert await store.subscription("nope") is None
    assert await store.message("nope") is None
    assert await store.inbound("nope") is None


async def test_same_event_twice_changes_nothing(store: StateStore) -> None:
    """Every write, repeated with the same event, returns False and leaves the state alone."""
    calls: list[Callable[[], Awaitable[bool]]] = [
        lambda: store.update_roaming(
            DEVICE, roaming=True, country_code=214, country_name=["ES"], time=T0, event_id="1"
        ),
        lambda: store.update_reachability(DEVICE, reachability="DATA", time=T0, event_id="2"),
        lambda: store.update_subscription(
            "s", api="a", status="ACTIVE", termination_reason=None, time=T0, event_id="3"
        ),
        lambda: store.record_message_status(
            "m", notification_type="sms", status="sent", time=T0, event_id="4"
        ),
        lambda: store.record_inbound_sms(
            "i",
            source_number="+1",
            destination_number="+2",
            message="t",
            received_time=T0,
            event_id="i",
        ),
    ]
    for call in calls:
        assert await call()
    before = [
        await store.device(DEVICE),
        await store.subscription("s"),
        await store.message("m"),
        await store.inbound("i"),
    ]
    for call in calls:
        assert not await call()
    after = [
        await store.device(DEVICE),
        await store.subscription("s"),
        await store.message("m"),
        await store.inbound("i"),
    ]
    assert after == before


async def test_older_events_do_not_overwrite(store: StateStore) -> None:
    """An event older than the stored one, in any group, returns False and changes nothing."""
    await store.update_roaming(
        DEVICE, roaming=True, country_code=214, country_name=["ES"], time=T0, event_id="b"
    )
    await store.update_reachability(DEVICE, reachability="DATA", time=T0, event_id="b")
    await store.update_subscription(
        "s", api="a", status="ENDED", termination_reason="X", time=T0, event_id="b"
    )
    await store.record_message_status(
        "m", notification_type="sms", status="delivered", time=T0, event_id="b"
    )
    before = [await store.device(DEVICE), await store.subscription("s")]
    for time, event_id in ((EARLIER, "z"), (T0, "a")):
        assert not await store.update_roaming(
            DEVICE,
            roaming=False,
            country_code=None,
            country_name=None,
            time=time,
            event_id=event_id,
        )
        assert not await store.update_reachability(
            DEVICE, reachability="SMS", time=time, event_id=event_id
        )
        assert not await store.update_subscription(
            "s", api="a", status="ACTIVE", termination_reason=None, time=time, event_id=event_id
        )
    assert [await store.device(DEVICE), await store.subscription("s")] == before
    # An older status is added to the history but does not become current.
    assert await store.record_message_status(
        "m", notification_type="sms", status="sending", time=EARLIER, event_id="z"
    )
    message = await store.message("m")
    assert message is not None
    assert message["status"] == "delivered"


async def test_microseconds_order_events_in_one_millisecond(store: StateStore) -> None:
    """Times 1 µs apart order correctly although the output shows milliseconds."""
    await store.update_reachability(
        DEVICE, reachability="DATA", time=T0 + timedelta(microseconds=2), event_id="a"
    )
    assert not await store.update_reachability(
        DEVICE, reachability="SMS", time=T0 + timedelta(microseconds=1), event_id="z"
    )
    assert await store.update_reachability(
        DEVICE, reachability="DISCONNECTED", time=T0 + timedelta(microseconds=3), event_id="0"
    )
    device = await store.device(DEVICE)
    assert device is not None
    assert device["reachability"] == "DISCONNECTED"


async def test_times_in_other_zones_are_compared_and_shown_in_utc(store: StateStore) -> None:
    """An offset time is the same instant: compared as such and printed in UTC."""
    plus_two = timezone(timedelta(hours=2))
    await store.update_reachability(
        DEVICE, reachability="DATA", time=T0.astimezone(plus_two), event_id="b"
    )
    assert not await store.update_reachability(DEVICE, reachability="SMS", time=T0, event_id="a")
    device = await store.device(DEVICE)
    assert device is not None
    assert device["reachability_time"] == "2023-01-17T13:18:23.682Z"


async def test_invalid_values_are_refused(store: StateStore) -> None:
    """Values outside the contract and naive times raise ValueError and store nothing."""
    with pytest.raises(ValueError, match="reachability"):
        await store.update_reachability(DEVICE, reachability="WIFI", time=T0, event_id="1")
    with pytest.raises(ValueError, match="status"):
        await store.update_subscription(
            "s", api="a", status="DELETED", termination_reason=None, time=T0, event_id="1"
        )
    naive = datetime(2023, 1, 17, 13, 18, 23)  # naive: the bug being refused
    with pytest.raises(ValueError, match="time zone"):
        await store.update_reachability(DEVICE, reachability="DATA", time=naive, event_id="1")
    assert await store.device(DEVICE) is None
    assert await store.subscription("s") is None
