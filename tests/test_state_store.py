"""The state store's pure parts: the winning rule, row shaping, URLs and stored time text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from consumers.state import InvalidStateURL, open_store
from consumers.state.postgres import split_url
from consumers.state.schema import sqlite_sql
from consumers.state.sqlite import from_text, sqlite_path, to_text
from consumers.state.store import (
    country_name_from_json,
    country_name_to_json,
    device_json,
    inbound_json,
    message_json,
    subscription_json,
)
from consumers.state.writes import (
    MessageStatusWrite,
    ReachabilityWrite,
    SubscriptionWrite,
    Version,
    check,
    utc,
)

T = datetime(2023, 1, 17, 13, 18, 23, 682000, tzinfo=UTC)
LATER = T + timedelta(microseconds=1)


def test_version_order_is_tier_time_rank_source_id() -> None:
    """Tier beats time, time beats rank, rank beats (source, id), source beats id."""
    assert Version(1, T, 0, "a", "a") > Version(0, LATER, 9, "z", "z")
    assert Version(0, LATER, 0, "a", "a") > Version(0, T, 9, "z", "z")
    assert Version(0, T, 1, "a", "a") > Version(0, T, 0, "z", "z")
    assert Version(0, T, 0, "b", "a") > Version(0, T, 0, "a", "z")
    assert Version(0, T, 0, "a", "b") > Version(0, T, 0, "a", "a")


def test_same_instant_in_other_zones_is_the_same_version() -> None:
    """Versions compare instants, not wall-clock text."""
    local = T.astimezone(timezone(timedelta(hours=2)))
    assert Version(0, local, 0, "s", "e") == Version(0, T, 0, "s", "e")


def test_utc_converts_offsets() -> None:
    """An aware time in another zone becomes the same instant in UTC."""
    local = T.astimezone(timezone(timedelta(hours=2)))
    assert utc(local) == T
    assert utc(local).tzinfo is UTC


def test_utc_rejects_naive_time() -> None:
    """A naive datetime is refused rather than guessed."""
    with pytest.raises(ValueError, match="no time zone"):
        utc(datetime(2023, 1, 1))  # naive on purpose


def test_checks_reject_unknown_values_and_naive_times() -> None:
    """Reachability and subscription status take only the contract's values; times are aware."""
    version = Version(0, T, 0, "s", "e")
    for value in ("DATA", "SMS", "DISCONNECTED"):
        check(ReachabilityWrite("d", value, version))
    for value in ("ACTIVE", "INACTIVE", "ENDED"):
        check(SubscriptionWrite("s", "api", value, None, version))
    with pytest.raises(ValueError, match="reachability"):
        check(ReachabilityWrite("d", "CONNECTED", version))
    with pytest.raises(ValueError, match="status"):
        check(SubscriptionWrite("s", "api", "EXPIRED", None, version))
    with pytest.raises(ValueError, match="no time zone"):
        check(ReachabilityWrite("d", "SMS", version._replace(time=datetime(2023, 1, 1))))


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


def _entry(status: str, time: datetime, event_id: str, tier: int = 1) -> MessageStatusWrite:
    return MessageStatusWrite("m", "sms", status, Version(tier, time, 0, "/s", event_id))


def test_message_json_orders_history_and_picks_winner() -> None:
    """History is oldest first by time; the current status is the greatest version."""
    entries = [
        _entry("delivered", LATER, "a"),
        _entry("sending", T, "z", tier=0),
        _entry("permanent-failure", LATER, "b"),
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


def test_message_json_final_status_stays_current_after_a_later_non_final_one() -> None:
    """A final status is current even when a non-final one has a later time."""
    entries = [_entry("delivered", T, "a"), _entry("sending", LATER, "b", tier=0)]
    shaped = message_json("m", entries)
    assert shaped is not None
    assert shaped["status"] == "delivered"
    assert [entry["status"] for entry in shaped["history"]] == ["delivered", "sending"]


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
