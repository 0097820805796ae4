"""The state store's pure parts: the winning rule, row shaping, URLs and stored time text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from consumers.state import InvalidStateURL, open_store
from consumers.state.postgres import split_url
from consumers.state.schema import sqlite_sql
from consumers.state.sqlite import from_text, sqlite_path, to_text
from consumers.state.store import (
    StatusEntry,
    check_reachability,
    check_subscription_status,
    country_name_from_json,
    country_name_to_json,
    device_json,
    inbound_json,
    keeps_earlier,
    message_json,
    subscription_json,
    utc,
    wins,
)

T = datetime(2023, 1, 17, 13, 18, 23, 682000, tzinfo=UTC)
LATER = T + timedelta(microseconds=1)


def test_newer_time_wins() -> None:
    """An event with a later time replaces the stored one whatever the event ids."""
    assert wins((LATER, "a"), (T, "z"))
    assert not wins((T, "z"), (LATER, "a"))


def test_same_time_broken_by_event_id() -> None:
    """At the same time the greater event id wins, so the order is total."""
    assert wins((T, "b"), (T, "a"))
    assert not wins((T, "a"), (T, "b"))


def test_same_event_does_not_win_again() -> None:
    """Re-applying the stored event changes nothing."""
    assert not wins((T, "a"), (T, "a"))


def test_anything_wins_over_nothing() -> None:
    """The first event for a field group always wins."""
    assert wins((T, "a"), None)


def test_history_keeps_earlier_entry() -> None:
    """A status seen again later keeps its earliest (time, event id)."""
    assert keeps_earlier((T, "b"), (LATER, "a"))
    assert keeps_earlier((T, "a"), (T, "b"))
    assert not keeps_earlier((T, "a"), (T, "a"))
    assert keeps_earlier((T, "a"), None)


def test_utc_converts_offsets() -> None:
    """An aware time in another zone becomes the same instant in UTC."""
    local = T.astimezone(timezone(timedelta(hours=2)))
    assert utc(local) == T
    assert utc(local).tzinfo is UTC


def test_utc_rejects_naive_time() -> None:
    """A naive datetime is refused rather than guessed."""
    with pytest.raises(ValueError, match="no time zone"):
        utc(datetime(2023, 1, 1))  # naive on purpose


def test_checks_reject_unknown_values() -> None:
    """Reachability and subscription status take only the contract's values."""
    for value in ("DATA", "SMS", "DISCONNECTED"):
        check_reachability(value)
    for value in ("ACTIVE", "INACTIVE", "ENDED"):
        check_subscription_status(value)
    with pytest.raises(ValueError, match="reachability"):
        check_reachability("data")
    with pytest.raises(ValueError, match="status"):
        check_subscription_status("EXPIRED")


def test_country_name_round_trip() -> None:
    """country_name keeps null, an empty array and a list apart."""
    for names in (None, [], ["FR", "MC"]):
        assert country_name_from_json(country_name_to_json(names)) == names
    assert country_name_to_json([]) == "[]"


def test_device_json_shape() -> None:
    """A device has exactly the contract's keys, times in UTC with milliseconds."""
    shaped = device_json(
        device="+123456789",
        roaming=True,
        country_code=214,
        country_name=["ES"],
        roaming_time=T + timedelta(microseconds=999),
        reachability=None,
        reachability_time=None,
    )
    assert shaped == {
        "device": "+123456789",
        "roaming": True,
        "country_code": 214,
        "country_name": ["ES"],
        "roaming_time": "2023-01-17T13:18:23.682Z",
        "reachability": None,
        "reachability_time": None,
    }


def test_subscription_json_shape() -> None:
    """A subscription has exactly the contract's keys."""
    shaped = subscription_json(
        subscription_id="s",
        api="device-roaming-status-subscriptions",
        status="ENDED",
        termination_reason="SUBSCRIPTION_EXPIRED",
        status_time=T.astimezone(timezone(-timedelta(hours=5))),
    )
    assert list(shaped) == [
        "subscription_id",
        "api",
        "status",
        "termination_reason",
        "status_time",
    ]
    assert shaped["status_time"] == "2023-01-17T13:18:23.682Z"


def test_message_json_orders_history_and_picks_winner() -> None:
    """History is oldest first by (time, event id); the current status is the last entry."""
    entries = [
        StatusEntry("delivered", "sms", LATER, "a"),
        StatusEntry("sending", "sms", T, "z"),
        StatusEntry("permanent-failure", "sms", LATER, "b"),
    ]
    shaped = message_json("m", entries)
    assert shaped == {
        "id": "m",
        "notification_type": "sms",
        "status": "permanent-failure",
        "status_time": "2023-01-17T13:18:23.682Z",
        "history": [
            {"status": "sending", "time": "2023-01-17T13:18:23.682Z", "event_id": "z"},
            {"status": "delivered", "time": "2023-01-17T13:18:23.682Z", "event_id": "a"},
            {"status": "permanent-failure", "time": "2023-01-17T13:18:23.682Z", "event_id": "b"},
        ],
    }


def test_message_json_without_entries_is_none() -> None:
    """A message with no stored status is unknown."""
    assert message_json("m", []) is None


def test_inbound_json_has_no_text() -> None:
    """An inbound SMS is shown without its text."""
    shaped = inbound_json(
        message_id="i", source_number="+61", destination_number=None, received_time=None
    )
    assert shaped == {
        "id": "i",
        "source_number": "+61",
        "destination_number": None,
        "received_time": None,
    }


def test_sqlite_time_text_is_fixed_width_and_ordered() -> None:
    """Stored time text has one width, compares like the instants, and keeps microseconds."""
    moments = [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC),
        T,
        LATER,
        T.astimezone(timezone(timedelta(hours=14))) + timedelta(seconds=1),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ]
    texts = [to_text(m) for m in moments]
    assert to_text(T) == "2023-01-17T13:18:23.682000Z"
    assert {len(text) for text in texts} == {27}
    assert texts == sorted(texts)
    assert [from_text(text) for text in texts] == moments


def test_sqlite_path_from_url() -> None:
    """sqlite:/// takes a relative path, sqlite://// an absolute one."""
    assert sqlite_path("sqlite:///./event-gateway.db") == "./event-gateway.db"
    assert sqlite_path("sqlite:///state.db") == "state.db"
    assert sqlite_path("sqlite:////var/lib/gw/state.db") == "/var/lib/gw/state.db"
    for bad in ("sqlite://state.db", "sqlite:///", "sqlite:///x.db?mode=ro"):
        with pytest.raises(InvalidStateURL):
            sqlite_path(bad)


def test_postgres_url_schema_is_split_off() -> None:
    """schema= is taken out of the DSN; other parameters stay."""
    dsn, schema = split_url("postgresql://u:p@db:5433/gw?sslmode=require&schema=tenant_a")
    assert (dsn, schema) == ("postgresql://u:p@db:5433/gw?sslmode=require", "tenant_a")
    assert split_url("postgres://db/gw") == ("postgres://db/gw", None)
    assert split_url("postgresql://db/gw?schema=s1") == ("postgresql://db/gw", "s1")


def test_postgres_url_rejects_bad_schema() -> None:
    """A schema name that is not a plain identifier, or given twice, is a URL error."""
    for bad in (
        "postgresql://db/gw?schema=",
        "postgresql://db/gw?schema=a;drop",
        "postgresql://db/gw?schema=1abc",
        "postgresql://db/gw?schema=a&schema=b",
        "mysql://db/gw",
    ):
        with pytest.raises(InvalidStateURL):
            split_url(bad)


async def test_open_store_rejects_unknown_scheme() -> None:
    """A URL for no known backend is a configuration error."""
    with pytest.raises(InvalidStateURL, match="sqlite:///"):
        await open_store("redis://localhost/0")


def test_sqlite_placeholders() -> None:
    """Shared statements get SQLite's numbered placeholders."""
    assert sqlite_sql("VALUES ($1, $2, $10)") == "VALUES (?1, ?2, ?10)"
