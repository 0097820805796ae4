"""Shared fixtures and helpers for the state store tests (``tests/test_state_*.py``).

Test modules import the fixtures they use by name, e.g.
``from state_fixtures import store_fixture  # noqa: F401``; pytest registers them under the
``name=`` given below.

Every test gets a fresh database: a SQLite file under ``tmp_path``, or a PostgreSQL schema
with a random name that the store creates on first use and the fixture drops afterwards.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from consumers.event import Event
from consumers.state import StateStore, open_store
from consumers.state.postgres import split_url
from consumers.state.schema import sqlite_sql
from consumers.state.sqlite import sqlite_path
from consumers.state.store import device_json, message_json, subscription_json
from consumers.state.writes import (
    CountryWrite,
    InboundWrite,
    MessageStatusWrite,
    ReachabilityWrite,
    RoamingWrite,
    SubscriptionWrite,
    Version,
    Write,
    reduce_writes,
)

POSTGRES_URL = os.environ.get(
    "STATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
BACKENDS = ("sqlite", "postgresql")


# --- databases -------------------------------------------------------------------------------


@pytest.fixture(name="pg_admin")
async def pg_admin_fixture() -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to the test database; fails (never skips) when it is unreachable."""
    try:
        connection = await asyncpg.connect(POSTGRES_URL, timeout=10)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL test server unreachable at {POSTGRES_URL} ({exc!r}); the state tests "
            "need it: start it or point STATE_TEST_POSTGRES_URL at one",
            pytrace=False,
        )
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture(name="pg_url")
async def pg_url_fixture(pg_admin: asyncpg.Connection) -> AsyncIterator[Callable[[], str]]:
    """Make URLs of fresh PostgreSQL schemas (not yet created); all are dropped afterwards."""
    schemas: list[str] = []

    def make() -> str:
        name = f"state_test_{uuid.uuid4().hex}"
        schemas.append(name)
        return f"{POSTGRES_URL}?schema={name}"

    try:
        yield make
    finally:
        for name in schemas:
            await pg_admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture(name="state_url", params=BACKENDS)
def state_url_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh, empty state database, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    make: Callable[[], str] = request.getfixturevalue("pg_url")
    return make()


@pytest.fixture(name="store")
async def store_fixture(state_url: str) -> AsyncIterator[StateStore]:
    """An open store on a fresh database, closed afterwards."""
    store = await open_store(state_url)
    try:
        yield store
    finally:
        await store.close()


async def stored_inbound_text(url: str, message_id: str) -> str | None:
    """The SMS text the store at ``url`` keeps for ``message_id``, read behind its back."""
    query = "SELECT message FROM inbound_messages WHERE message_id = $1"
    if url.startswith("sqlite"):
        with closing(sqlite3.connect(sqlite_path(url))) as db:
            row = db.execute(sqlite_sql(query), (message_id,)).fetchone()
        return None if row is None else str(row[0])
    dsn, schema = split_url(url)
    connection = await asyncpg.connect(dsn, server_settings={"search_path": f'"{schema}"'})
    try:
        text: str | None = await connection.fetchval(query, message_id)
    finally:
        await connection.close()
    return text


# --- writes as values ------------------------------------------------------------------------

T0 = datetime(2023, 1, 17, 13, 18, 23, 682000, tzinfo=UTC)
LATER = T0 + timedelta(seconds=1)
DEVICE = "+36721601234567"


def v(
    time: datetime = T0, event_id: str = "e", *, tier: int = 0, rank: int = 0, source: str = "/s"
) -> Version:
    """A version, defaults for everything but what a test is about."""
    return Version(tier, time, rank, source, event_id)


def roaming(value: bool, version: Version, device: str = DEVICE) -> RoamingWrite:
    return RoamingWrite(device, value, version)


def country(
    code: int | None, names: tuple[str, ...] | None, version: Version, device: str = DEVICE
) -> CountryWrite:
    return CountryWrite(device, code, names, version)


def reach(value: str, version: Version, device: str = DEVICE) -> ReachabilityWrite:
    return ReachabilityWrite(device, value, version)


def subscription(
    status: str, version: Version, key: str = "sub-1", reason: str | None = None
) -> SubscriptionWrite:
    return SubscriptionWrite(key, "device-roaming-status-subscriptions", status, reason, version)


def message_status(status: str, version: Version, key: str = "msg-1") -> MessageStatusWrite:
    return MessageStatusWrite(key, "sms", status, version)


def inbound(version: Version, key: str = "in-1", text: str | None = "hi") -> InboundWrite:
    return InboundWrite(key, "+61412987654", "+61412345678", text, version.time, version)


# --- events as the workers receive them ------------------------------------------------------

ROAMING_API = "device-roaming-status-subscriptions"
REACHABILITY_API = "device-reachability-status-subscriptions"


def camara_event(
    name: str,
    time: str,
    event_id: str,
    *,
    source: str = "/s",
    api: str = ROAMING_API,
    event_version: str = "v0",
    data: dict[str, Any] | None = None,
    key: str | None = DEVICE,
) -> Event:
    """A CAMARA event as the ingress publishes it (``partitionkey`` = ``key``)."""
    raw: dict[str, Any] = {
        "id": event_id,
        "source": source,
        "type": f"org.camaraproject.{api}.{event_version}.{name}",
        "specversion": "1.0",
        "time": time,
        "data": {"subscriptionId": "sub-1", **(data or {})},
        "gatewaysource": "camara",
        "gatewayreceived": time,
    }
    if key is not None:
        raw["partitionkey"] = key
    return Event.from_dict(raw)


def receipt_event(
    status: str,
    *,
    created_at: str,
    completed_at: str | None = None,
    sent_at: str | None = None,
    message_id: str = "msg-1",
    source: str = "/callbacks/notify-status",
) -> Event:
    """A Notify SMS delivery receipt as the notify-delivery-status adapter publishes it."""
    return Event.from_dict(
        {
            "id": f"{message_id}:{status}",
            "source": source,
            "type": "notify.sms.delivery-status",
            "specversion": "1.0",
            "time": completed_at or created_at,
            "subject": message_id,
            "partitionkey": message_id,
            "gatewaysource": "notify-status",
            "gatewayreceived": created_at,
            "data": {
                "id": message_id,
                "reference": None,
                "to": "07700912345",
                "status": status,
                "notification_type": "sms",
                "created_at": created_at,
                "completed_at": completed_at,
                "sent_at": sent_at,
            },
        }
    )


def pure_state(writes: Iterable[Write]) -> dict[str, dict[str, Any]]:
    """The state a batch of writes gives, computed with the pure layer alone (no store)."""
    reduced = reduce_writes(writes)
    devices = {}
    for row in reduced.devices:
        roam, where, reachable = row.roaming, row.country, row.reachability
        names = None if where is None or where.country_name is None else list(where.country_name)
        devices[row.device] = device_json(
            device=row.device,
            roaming=None if roam is None else roam.roaming,
            country_code=None if where is None else where.country_code,
            country_name=names,
            roaming_time=None if roam is None else roam.version.time,
            reachability=None if reachable is None else reachable.reachability,
            reachability_time=None if reachable is None else reachable.version.time,
        )
    subscriptions = {
        w.subscription_id: subscription_json(
            subscription_id=w.subscription_id,
            api=w.api,
            status=w.status,
            termination_reason=w.termination_reason,
            status_time=w.version.time,
        )
        for w in reduced.subscriptions
    }
    by_message: dict[str, list[MessageStatusWrite]] = {}
    for entry in reduced.message_statuses:
        by_message.setdefault(entry.message_id, []).append(entry)
    messages = {key: message_json(key, entries) for key, entries in by_message.items()}
    return {"device": devices, "subscription": subscriptions, "message": messages}
