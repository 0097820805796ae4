"""Shared fixtures and helpers for the state store tests (``tests/test_state_*.py``).

Test modules import the fixtures they use by name, e.g.
``from state_fixtures import store_fixture  # noqa: F401``; pytest registers them under the
``name=`` given below.

Every test gets a fresh database: a SQLite file under ``tmp_path``, or a PostgreSQL schema
with a random name that the store creates on first use and the fixture drops afterwards.
"""

from __future__ import annotations

import os
import random
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import closing
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from hypothesis import strategies as st

from consumers.state import StateStore, open_store
from consumers.state.postgres import split_url
from consumers.state.schema import sqlite_sql
from consumers.state.sqlite import sqlite_path
from gateway.cloudevent import rfc3339

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


# --- updates as values -----------------------------------------------------------------------

T0 = datetime(2023, 1, 17, 13, 18, 23, 682000, tzinfo=UTC)


@dataclass(frozen=True)
class Roaming:
    """An ``update_roaming`` call."""

    device: str
    roaming: bool | None
    country_code: int | None
    country_name: tuple[str, ...] | None
    time: datetime
    event_id: str = ""


@dataclass(frozen=True)
class Reachability:
    """An ``update_reachability`` call."""

    device: str
    reachability: str
    time: datetime
    event_id: str = ""


@dataclass(frozen=True)
class Subscription:
    """An ``update_subscription`` call."""

    subscription_id: str
    api: str
    status: str
    termination_reason: str | None
    time: datetime
    event_id: str = ""


@dataclass(frozen=True)
class MessageStatus:
    """A ``record_message_status`` call."""

    message_id: str
    notification_type: str
    status: str
    time: datetime
    event_id: str = ""


@dataclass(frozen=True)
class Inbound:
    """A ``record_inbound_sms`` call; ``time`` is the received time."""

    message_id: str
    source_number: str | None
    destination_number: str | None
    message: str | None
    time: datetime
    event_id: str = ""


Update = Roaming | Reachability | Subscription | MessageStatus | Inbound


def version(update: Update) -> tuple[datetime, str]:
    """The ``(time, event_id)`` an update is ordered by."""
    return (update.time, update.event_id)


async def apply(store: StateStore, update: Update, prefix: str = "") -> bool:
    """Make the store call ``update`` stands for, with ``prefix`` before the entity key."""
    match update:
        case Roaming():
            return await store.update_roaming(
                prefix + update.device,
                roaming=update.roaming,
                country_code=update.country_code,
                country_name=None if update.country_name is None else list(update.country_name),
                time=update.time,
                event_id=update.event_id,
            )
        case Reachability():
            return await store.update_reachability(
                prefix + update.device,
                reachability=update.reachability,
                time=update.time,
                event_id=update.event_id,
            )
        case Subscription():
            return await store.update_subscription(
                prefix + update.subscription_id,
                api=update.api,
                status=update.status,
                termination_reason=update.termination_reason,
                time=update.time,
                event_id=update.event_id,
            )
        case MessageStatus():
            return await store.record_message_status(
                prefix + update.message_id,
                notification_type=update.notification_type,
                status=update.status,
                time=update.time,
                event_id=update.event_id,
            )
        case Inbound():
            return await store.record_inbound_sms(
                prefix + update.message_id,
                source_number=update.source_number,
                destination_number=update.destination_number,
                message=update.message,
                received_time=update.time,
                event_id=update.event_id,
            )


State = dict[str, dict[str, dict[str, Any]]]


def _keys(updates: Iterable[Update]) -> dict[str, set[str]]:
    keys: dict[str, set[str]] = {"device": set(), "subscription": set(), "message": set()}
    keys["inbound"] = set()
    for update in updates:
        match update:
            case Roaming() | Reachability():
                keys["device"].add(update.device)
            case Subscription():
                keys["subscription"].add(update.subscription_id)
            case MessageStatus():
                keys["message"].add(update.message_id)
            case Inbound():
                keys["inbound"].add(update.message_id)
    return keys


_ID_FIELD = {
    "device": "device",
    "subscription": "subscription_id",
    "message": "id",
    "inbound": "id",
}


async def snapshot(store: StateStore, updates: Iterable[Update], prefix: str = "") -> State:
    """Everything the store says about the entities ``updates`` touch, keys without prefix."""
    readers = {
        "device": store.device,
        "subscription": store.subscription,
        "message": store.message,
        "inbound": store.inbound,
    }
    state: State = {}
    for kind, keys in _keys(updates).items():
        state[kind] = {}
        for key in sorted(keys):
            found = await readers[kind](prefix + key)
            assert found is not None, f"{kind} {prefix + key} missing"
            assert found[_ID_FIELD[kind]] == prefix + key
            state[kind][key] = {**found, _ID_FIELD[kind]: key}
    return state


U = TypeVar("U", Roaming, Reachability, Subscription, MessageStatus, Inbound)


def _latest(updates: Iterable[U]) -> U | None:
    return max(updates, key=version, default=None)


def expected_state(updates: Iterable[Update]) -> State:
    """The final state by the contract's rule, computed without any store."""
    updates = set(updates)
    state: State = {kind: {} for kind in ("device", "subscription", "message", "inbound")}
    for key in _keys(updates)["device"]:
        roam = _latest(u for u in updates if isinstance(u, Roaming) and u.device == key)
        reach = _latest(u for u in updates if isinstance(u, Reachability) and u.device == key)
        state["device"][key] = {
            "device": key,
            "roaming": None if roam is None else roam.roaming,
            "country_code": None if roam is None else roam.country_code,
            "country_name": None
            if roam is None or roam.country_name is None
            else list(roam.country_name),
            "roaming_time": None if roam is None else rfc3339(roam.time),
            "reachability": None if reach is None else reach.reachability,
            "reachability_time": None if reach is None else rfc3339(reach.time),
        }
    for key in _keys(updates)["subscription"]:
        sub = _latest(
            u for u in updates if isinstance(u, Subscription) and u.subscription_id == key
        )
        assert sub is not None
        state["subscription"][key] = {
            "subscription_id": key,
            "api": sub.api,
            "status": sub.status,
            "termination_reason": sub.termination_reason,
            "status_time": rfc3339(sub.time),
        }
    for key in _keys(updates)["message"]:
        earliest: dict[str, MessageStatus] = {}
        for u in updates:
            if isinstance(u, MessageStatus) and u.message_id == key:
                kept = earliest.get(u.status)
                if kept is None or version(u) < version(kept):
                    earliest[u.status] = u
        history = sorted(earliest.values(), key=version)
        state["message"][key] = {
            "id": key,
            "notification_type": history[-1].notification_type,
            "status": history[-1].status,
            "status_time": rfc3339(history[-1].time),
            "history": [
                {"status": u.status, "time": rfc3339(u.time), "event_id": u.event_id}
                for u in history
            ],
        }
    for u in updates:
        if isinstance(u, Inbound):
            state["inbound"][u.message_id] = {
                "id": u.message_id,
                "source_number": u.source_number,
                "destination_number": u.destination_number,
                "received_time": rfc3339(u.time),
            }
    return state


# --- generated update lists ------------------------------------------------------------------

DEVICES = ("+36721601234567", "+123456789")
SUBSCRIPTIONS = ("qs15-h556-rt89-1298", "sub-2")
MESSAGES = ("740e5834-3a29-46b4-9a6f-16142fde533a", "msg-2")
INBOUND = {
    "inbound-1": ("+61412987654", "+61412345678", "Hello Notify!"),
    "inbound-2": ("+61400000000", None, None),
}
# Offsets in microseconds: ties, 1 µs apart (same millisecond in the output), a minute apart.
OFFSETS_US = (0, 1, 999, 1000, 60_000_000)
ZONES = (UTC, timezone(timedelta(hours=2)), timezone(-timedelta(hours=5, minutes=30)))
ROAMING_VALUES: tuple[tuple[bool | None, int | None, tuple[str, ...] | None], ...] = (
    (True, 214, ("ES",)),
    (True, 208, ("FR", "MC")),
    (True, 999, ()),
    (True, None, None),
    (False, None, None),
    (None, 234, ("GB",)),
)
REACHABILITIES = ("DATA", "SMS", "DISCONNECTED")
SUBSCRIPTION_CHANGES = (
    ("ACTIVE", None),
    ("INACTIVE", None),
    ("ENDED", "SUBSCRIPTION_EXPIRED"),
    ("ENDED", "NETWORK_TERMINATED"),
)
MESSAGE_STATUSES = ("created", "sending", "delivered", "permanent-failure")
APIS = ("device-roaming-status-subscriptions", "device-reachability-status-subscriptions")


def moment(offset_us: int, zone: timezone = UTC) -> datetime:
    """``T0`` plus ``offset_us`` microseconds, expressed in ``zone``."""
    return (T0 + timedelta(microseconds=offset_us)).astimezone(zone)


def _inbound(message_id: str, time: datetime) -> Inbound:
    source, destination, text = INBOUND[message_id]
    return Inbound(message_id, source, destination, text, time, event_id=message_id)


def update_strategy() -> st.SearchStrategy[Update]:
    """One update of any kind, on a few entities, at a few colliding times (no event id yet)."""
    times = st.builds(moment, st.sampled_from(OFFSETS_US), st.sampled_from(ZONES))
    roaming = st.builds(
        lambda device, value, time: Roaming(device, value[0], value[1], value[2], time),
        st.sampled_from(DEVICES),
        st.sampled_from(ROAMING_VALUES),
        times,
    )
    reachability = st.builds(
        Reachability, st.sampled_from(DEVICES), st.sampled_from(REACHABILITIES), times
    )
    subscription = st.builds(
        lambda sub, api, change, time: Subscription(sub, api, change[0], change[1], time),
        st.sampled_from(SUBSCRIPTIONS),
        st.sampled_from(APIS),
        st.sampled_from(SUBSCRIPTION_CHANGES),
        times,
    )
    message = st.builds(
        MessageStatus,
        st.sampled_from(MESSAGES),
        st.just("sms"),
        st.sampled_from(MESSAGE_STATUSES),
        times,
    )
    inbound = st.builds(_inbound, st.sampled_from(sorted(INBOUND)), times)
    return st.one_of(roaming, reachability, subscription, message, inbound)


def with_event_ids(updates: list[Update], numbers: list[int]) -> list[Update]:
    """Give each update its own event id (inbound SMS: its message id, first one per id wins)."""
    named: list[Update] = []
    seen_inbound: set[str] = set()
    for update, number in zip(updates, numbers, strict=True):
        if isinstance(update, Inbound):
            if update.message_id in seen_inbound:
                continue  # one SMS is one callback; only its redeliveries repeat it
            seen_inbound.add(update.message_id)
            named.append(update)
        else:
            named.append(replace(update, event_id=f"ev-{number}"))
    return named


@st.composite
def update_lists(draw: st.DrawFn) -> list[Update]:
    """Distinct updates plus redeliveries of some of them, in any order."""
    updates = draw(st.lists(update_strategy(), min_size=1, max_size=12))
    numbers = draw(st.permutations(range(len(updates))))
    distinct = with_event_ids(updates, numbers)
    redelivered = draw(st.lists(st.sampled_from(distinct), max_size=8))
    return draw(st.permutations(distinct + redelivered))


def random_updates(rng: random.Random, count: int) -> list[Update]:
    """``count`` distinct updates on few entities, then redeliveries, shuffled by ``rng``."""
    updates: list[Update] = []
    for number in range(count):
        time = moment(rng.choice(OFFSETS_US) * rng.randint(1, 3), rng.choice(ZONES))
        event_id = f"ev-{rng.randrange(10**6):06d}-{number}"
        kind = rng.randrange(4)
        if kind == 0:
            roaming, code, names = rng.choice(ROAMING_VALUES)
            updates.append(Roaming(rng.choice(DEVICES), roaming, code, names, time, event_id))
        elif kind == 1:
            reach = rng.choice(REACHABILITIES)
            updates.append(Reachability(rng.choice(DEVICES), reach, time, event_id))
        elif kind == 2:
            status, reason = rng.choice(SUBSCRIPTION_CHANGES)
            sub, api = rng.choice(SUBSCRIPTIONS), rng.choice(APIS)
            updates.append(Subscription(sub, api, status, reason, time, event_id))
        else:
            status = rng.choice(MESSAGE_STATUSES)
            updates.append(MessageStatus(rng.choice(MESSAGES), "sms", status, time, event_id))
    updates += [_inbound(message_id, T0) for message_id in INBOUND]
    all_updates = updates + rng.choices(updates, k=count // 2)
    rng.shuffle(all_updates)
    return all_updates
