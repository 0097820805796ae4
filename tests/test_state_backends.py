"""Both backends apply writes alike: round trips, field groups, versions, refusals."""

from __future__ import annotations

from datetime import timedelta, timezone

import pytest

from consumers.state import StateStore
from consumers.state.writes import Version, Write
from tests.state_fixtures import (  # noqa: F401 - pytest fixtures, registered by import
    DEVICE,
    LATER,
    T0,
    country,
    inbound,
    message_status,
    pg_admin_fixture,
    pg_url_fixture,
    reach,
    roaming,
    state_url_fixture,
    store_fixture,
    stored_inbound_text,
    subscription,
    v,
)


async def test_device_round_trip(store: StateStore) -> None:
    """Roaming, country and reachability come back as the contract's device object."""
    await store.apply_writes(
        [
            roaming(True, v(T0, "a")),
            country(214, ("ES",), v(T0, "a", rank=1)),
            reach("SMS", v(LATER, "b")),
        ]
    )
    assert await store.device(DEVICE) == {
        "device": DEVICE,
        "roaming": True,
        "country_code": 214,
        "country_name": ["ES"],
        "roaming_time": "2023-01-17T13:18:23.682Z",
        "reachability": "SMS",
        "reachability_time": "2023-01-17T13:18:24.682Z",
    }


async def test_groups_of_one_device_are_ordered_on_their_own(store: StateStore) -> None:
    """An older write to one group is refused while a newer one to another is taken."""
    await store.apply_writes([reach("DATA", v(LATER, "r")), roaming(False, v(LATER, "x"))])
    await store.apply_writes([reach("SMS", v(T0, "old")), country(1, ("FR",), v(T0, "c"))])
    device = await store.device(DEVICE)
    assert device is not None
    assert (device["reachability"], device["roaming"]) == ("DATA", False)
    assert (device["country_code"], device["country_name"]) == (1, ["FR"])


async def test_empty_and_unknown_country_names_are_kept_apart(store: StateStore) -> None:
    """countryName [] (no mapping) is not null (unknown)."""
    await store.apply_writes([country(999, (), v())])
    assert (await store.device(DEVICE) or {})["country_name"] == []
    await store.apply_writes([country(None, None, v(LATER))])
    assert (await store.device(DEVICE) or {})["country_name"] is None


async def test_subscription_round_trip(store: StateStore) -> None:
    """A subscription comes back with its API, status, reason and time."""
    await store.apply_writes([subscription("ENDED", v(tier=1), reason="SUBSCRIPTION_EXPIRED")])
    assert await store.subscription("sub-1") == {
        "subscription_id": "sub-1",
        "api": "device-roaming-status-subscriptions",
        "status": "ENDED",
        "termination_reason": "SUBSCRIPTION_EXPIRED",
        "status_time": "2023-01-17T13:18:23.682Z",
    }


async def test_tier_beats_time_and_rank_beats_a_tie(store: StateStore) -> None:
    """A final (tier 1) write survives later ordinary ones; at one time the higher rank wins."""
    await store.apply_writes([subscription("ENDED", v(T0, "z", tier=1, rank=2))])
    await store.apply_writes([subscription("ACTIVE", v(LATER, "a"))])
    assert (await store.subscription("sub-1") or {})["status"] == "ENDED"
    await store.apply_writes([subscription("ACTIVE", v(T0, "a"), key="sub-2")])
    await store.apply_writes([subscription("INACTIVE", v(T0, "0", rank=1), key="sub-2")])
    assert (await store.subscription("sub-2") or {})["status"] == "INACTIVE"


async def test_source_then_id_break_an_exact_tie(store: StateStore) -> None:
    """Same time and rank: the greater (source, id) wins, in either order of arrival."""
    first, second = v(T0, "e", source="/a"), v(T0, "e", source="/b")
    await store.apply_writes([reach("SMS", second)])
    await store.apply_writes([reach("DATA", first)])
    assert (await store.device(DEVICE) or {})["reachability"] == "SMS"


async def test_message_history_and_final_status(store: StateStore) -> None:
    """Every status once with its earliest time; a final status stays current."""
    await store.apply_writes(
        [
            message_status("delivered", v(T0, "m:delivered", tier=1)),
            message_status("sending", v(LATER, "m:sending")),
        ]
    )
    await store.apply_writes([message_status("sending", v(LATER + timedelta(1), "again"))])
    assert await store.message("msg-1") == {
        "id": "msg-1",
        "notification_type": "sms",
        "status": "delivered",
        "status_time": "2023-01-17T13:18:23.682Z",
        "history": [
            {"status": "delivered", "time": "2023-01-17T13:18:23.682Z", "event_id": "m:delivered"},
            {"status": "sending", "time": "2023-01-17T13:18:24.682Z", "event_id": "m:sending"},
        ],
    }


async def test_inbound_round_trip_without_text(store: StateStore, state_url: str) -> None:
    """An inbound SMS comes back without its text, which is stored."""
    await store.apply_writes([inbound(v(T0, "in-1"))])
    assert await store.inbound("in-1") == {
        "id": "in-1",
        "source_number": "+61412987654",
        "destination_number": "+61412345678",
        "received_time": "2023-01-17T13:18:23.682Z",
    }
    assert await stored_inbound_text(state_url, "in-1") == "hi"


async def test_inbound_same_id_from_two_sources_keeps_one_whatever_the_order(
    store: StateStore, state_url: str
) -> None:
    """The same message id from two sources: the greater source wins in either order."""
    await store.apply_writes([inbound(v(T0, "in-1", source="/b"), text="b")])
    await store.apply_writes([inbound(v(T0, "in-1", source="/a"), text="a")])
    await store.apply_writes([inbound(v(T0, "in-2", source="/a"), key="in-2", text="a")])
    await store.apply_writes([inbound(v(T0, "in-2", source="/b"), key="in-2", text="b")])
    assert await stored_inbound_text(state_url, "in-1") == "b"
    assert await stored_inbound_text(state_url, "in-2") == "b"


async def test_unknown_keys_are_none(store: StateStore) -> None:
    """Nothing stored: every reader says None."""
    assert await store.device("+1") is None
    assert await store.subscription("s") is None
    assert await store.message("m") is None
    assert await store.inbound("i") is None


async def test_same_writes_twice_change_nothing(store: StateStore) -> None:
    """Applying a batch again leaves every entity as it was."""
    batch: list[Write] = [
        roaming(True, v()),
        country(208, ("FR",), v(rank=1)),
        reach("DATA", v()),
        subscription("ACTIVE", v()),
        message_status("created", v()),
        inbound(v()),
    ]
    await store.apply_writes(batch)
    before = [
        await store.device(DEVICE),
        await store.subscription("sub-1"),
        await store.message("msg-1"),
        await store.inbound("in-1"),
    ]
    await store.apply_writes(batch)
    after = [
        await store.device(DEVICE),
        await store.subscription("sub-1"),
        await store.message("msg-1"),
        await store.inbound("in-1"),
    ]
    assert after == before


async def test_microseconds_and_time_zones_order_writes(store: StateStore) -> None:
    """1 µs apart is ordered; a time in another zone is the same instant, shown in UTC."""
    await store.apply_writes([reach("DATA", v(T0 + timedelta(microseconds=1), "a"))])
    await store.apply_writes([reach("SMS", v(T0, "z"))])
    assert (await store.device(DEVICE) or {})["reachability"] == "DATA"
    zone = timezone(timedelta(hours=-5, minutes=-30))
    await store.apply_writes([reach("SMS", v(LATER.astimezone(zone), "b"), device="+2")])
    assert (await store.device("+2") or {})["reachability_time"] == "2023-01-17T13:18:24.682Z"


async def test_invalid_writes_are_refused_before_anything_is_written(store: StateStore) -> None:
    """A bad value or a naive time fails the whole batch with ValueError, nothing written."""
    naive = Version(0, T0.replace(tzinfo=None), 0, "/s", "e")
    for bad in (reach("WIFI", v()), subscription("EXPIRED", v()), reach("SMS", naive)):
        with pytest.raises(ValueError, match=r"reachability|status|time zone"):
            await store.apply_writes([reach("DATA", v(), device="+9"), bad])
    assert await store.device("+9") is None
