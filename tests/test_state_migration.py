"""A store written by the previous version opens, reads the same and keeps working.

``OLD_TABLES`` is the DDL of ``consumers/state/schema.py`` before the §5 precedence rules
(commit f1ab9ab), rows are inserted as that version wrote them, then today's ``open_store``
opens the database.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from typing import Any

import asyncpg

from consumers.handlers import reachability, roaming, sms
from consumers.state import open_store
from consumers.state.postgres import split_url
from consumers.state.schema import sqlite_sql
from consumers.state.sqlite import sqlite_path
from tests.state_fixtures import (  # noqa: F401 - pytest fixtures, registered by import
    camara_event,
    pg_admin_fixture,
    pg_url_fixture,
    receipt_event,
    state_url_fixture,
)

SQLITE_TYPES = {"k": "TEXT", "t": "TEXT", "b": "INTEGER", "j": "TEXT"}
POSTGRES_TYPES = {"k": 'text COLLATE "C"', "t": "timestamptz", "b": "boolean", "j": "jsonb"}
OLD_TABLES = [
    """CREATE TABLE devices (
        device {k} PRIMARY KEY, roaming {b}, country_code integer, country_name {j},
        roaming_time {t}, roaming_event_id {k}, reachability text, reachability_time {t},
        reachability_event_id {k})""",
    """CREATE TABLE subscriptions (
        subscription_id {k} PRIMARY KEY, api text NOT NULL, status text NOT NULL,
        termination_reason text, status_time {t} NOT NULL, event_id {k} NOT NULL)""",
    """CREATE TABLE message_statuses (
        message_id {k} NOT NULL, status text NOT NULL, notification_type text NOT NULL,
        status_time {t} NOT NULL, event_id {k} NOT NULL, PRIMARY KEY (message_id, status))""",
    """CREATE TABLE inbound_messages (
        message_id {k} PRIMARY KEY, source_number text, destination_number text, message text,
        received_time {t}, event_id {k} NOT NULL)""",
]
T1 = datetime(2024, 3, 5, 15, 0, 23, tzinfo=UTC)
T1_TEXT = "2024-03-05T15:00:23.000Z"
OLD_ROWS: list[tuple[str, tuple[Any, ...]]] = [
    # A phone number sent as a JSON number was keyed without its "+".
    (
        "INSERT INTO devices VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        ("36721601234567", True, 208, '["FR"]', T1, "r-1", "SMS", T1, "c-1"),
    ),
    # An IPv4 device was keyed by its public address alone.
    (
        "INSERT INTO devices VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        ("84.125.93.10", False, None, None, T1, "r-2", None, None, None),
    ),
    (
        "INSERT INTO subscriptions VALUES ($1, $2, $3, $4, $5, $6)",
        ("sub-1", "device-roaming-status-subscriptions", "ENDED", "SUBSCRIPTION_EXPIRED", T1, "z"),
    ),
    (
        "INSERT INTO subscriptions VALUES ($1, $2, $3, $4, $5, $6)",
        ("sub-2", "device-roaming-status-subscriptions", "ACTIVE", None, T1, "a"),
    ),
    (
        "INSERT INTO message_statuses VALUES ($1, $2, $3, $4, $5)",
        ("msg-1", "delivered", "sms", T1, "msg-1:delivered"),
    ),
    (
        "INSERT INTO inbound_messages VALUES ($1, $2, $3, $4, $5, $6)",
        ("in-1", "+447700912345", "+447700900000", "hello", T1, "in-1"),
    ),
]


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


async def write_old_store(url: str) -> None:
    """Create the previous version's tables and rows at ``url``."""
    if url.startswith("sqlite"):
        with closing(sqlite3.connect(sqlite_path(url))) as db:
            for table in OLD_TABLES:
                db.execute(table.format(**SQLITE_TYPES))
            for statement, row in OLD_ROWS:
                db.execute(sqlite_sql(statement), tuple(map(_sqlite_value, row)))
            db.commit()
        return
    dsn, schema = split_url(url)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f'CREATE SCHEMA "{schema}"')
        await connection.execute(f'SET search_path TO "{schema}"')
        for table in OLD_TABLES:
            await connection.execute(table.format(**POSTGRES_TYPES))
        for statement, row in OLD_ROWS:
            await connection.execute(statement, *row)
    finally:
        await connection.close()


async def test_a_previous_version_store_opens_reads_and_keeps_working(state_url: str) -> None:
    """Old rows read the same (a +-less phone key moves to +E.164); new events apply by
    today's rules on top of them; opening again changes nothing."""
    await write_old_store(state_url)
    store = await open_store(state_url)
    try:
        assert await store.device("36721601234567") is None
        assert await store.device("+36721601234567") == {
            "device": "+36721601234567",
            "roaming": True,
            "country_code": 208,
            "country_name": ["FR"],
            "roaming_time": T1_TEXT,
            "reachability": "SMS",
            "reachability_time": T1_TEXT,
        }
        legacy_ipv4 = await store.device("84.125.93.10")
        assert legacy_ipv4 is not None
        assert legacy_ipv4["roaming"] is False
        assert (await store.subscription("sub-1") or {})["status"] == "ENDED"
        assert (await store.message("msg-1") or {})["status"] == "delivered"
        assert (await store.inbound("in-1") or {})["source_number"] == "+447700912345"

        # Today's rules on old rows: ENDED stays, a final status stays, a roaming-on of the
        # same time keeps the old country, a tie on reachability goes to (source, id).
        time = "2024-03-05T15:00:23Z"
        later = "2024-03-05T15:00:24Z"
        await store.apply_writes(
            [
                *roaming.plan(
                    camara_event(
                        "subscription-started", later, "x", data={"subscriptionId": "sub-1"}
                    )
                ),
                *roaming.plan(
                    camara_event("subscription-ended", time, "0", data={"subscriptionId": "sub-2"})
                ),
                *roaming.plan(camara_event("roaming-on", time, "zz", key="+36721601234567")),
                *reachability.plan(
                    camara_event(
                        "reachability-data",
                        later,
                        "d",
                        key="+36721601234567",
                        api="device-reachability-status-subscriptions",
                    )
                ),
                *sms.plan(receipt_event("sending", created_at=later)),
            ]
        )
        assert (await store.subscription("sub-1") or {})["status"] == "ENDED"
        assert (await store.subscription("sub-2") or {})["status"] == "ENDED"
        device = await store.device("+36721601234567")
        assert device is not None
        assert (device["roaming"], device["country_name"]) == (True, ["FR"])
        assert device["reachability"] == "DATA"
        message = await store.message("msg-1")
        assert message is not None
        assert message["status"] == "delivered"
        assert [entry["status"] for entry in message["history"]] == ["delivered", "sending"]
    finally:
        await store.close()
    again = await open_store(state_url)
    try:
        assert (await again.device("+36721601234567") or {})["reachability"] == "DATA"
        assert await again.device("36721601234567") is None
    finally:
        await again.close()


async def test_opening_a_current_store_migrates_nothing(state_url: str) -> None:
    """A store created by this version opens again with its rows untouched."""
    store = await open_store(state_url)
    try:
        await store.apply_writes(
            sms.plan(receipt_event("delivered", created_at="2024-03-05T15:00:23Z"))
        )
    finally:
        await store.close()
    reopened = await open_store(state_url)
    try:
        assert (await reopened.message("msg-1") or {})["status"] == "delivered"
    finally:
        await reopened.close()
