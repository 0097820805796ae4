"""The state store on PostgreSQL, through an asyncpg pool.

Every write is one autocommitted statement. ``?schema=<name>`` in the URL selects a schema
(created if missing) through ``search_path``; the rest of the URL goes to asyncpg unchanged.
Tables are created under a transaction-scoped advisory lock, so processes that start at the
same moment do not trip over each other's ``CREATE``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from consumers.state import schema
from consumers.state.store import (
    InvalidStateURL,
    StateStoreUnavailable,
    StatusEntry,
    check_reachability,
    check_subscription_status,
    country_name_from_json,
    country_name_to_json,
    device_json,
    inbound_json,
    message_json,
    subscription_json,
    utc,
)

SCHEMES = ("postgresql", "postgres")
POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 10
CONNECT_TIMEOUT_S = 10.0
# pg_advisory_xact_lock key held while creating the schema and tables ("evgw" in ASCII).
_DDL_LOCK_KEY = 0x65766777
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def split_url(url: str) -> tuple[str, str | None]:
    """The DSN for asyncpg (without ``schema=``) and the schema name, if the URL gives one."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise InvalidStateURL(f"a PostgreSQL state URL starts with postgresql://: {url!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for name, value in query if name == "schema"]
    if len(schemas) > 1:
        raise InvalidStateURL("the state URL gives schema= more than once")
    name = schemas[0] if schemas else None
    if name is not None and not _SCHEMA_NAME.fullmatch(name):
        raise InvalidStateURL(
            f"schema= must be a letter or _, then letters, digits or _ (at most 63): {name!r}"
        )
    rest = urlencode([(key, value) for key, value in query if key != "schema"])
    return urlunsplit(parts._replace(query=rest)), name


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _where(dsn: str) -> str:
    """Host, port and database of a DSN, for error messages (never the password)."""
    parts = urlsplit(dsn)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path}"


class PostgresStateStore:
    """``StateStore`` on PostgreSQL; create it with ``open``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, url: str) -> PostgresStateStore:
        """Connect a pool and create the schema and tables if missing."""
        dsn, schema_name = split_url(url)
        settings = {} if schema_name is None else {"search_path": _quote(schema_name)}
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=POOL_MIN_SIZE,
                max_size=POOL_MAX_SIZE,
                timeout=CONNECT_TIMEOUT_S,
                server_settings=settings,
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StateStoreUnavailable(
                f"cannot connect to PostgreSQL at {_where(dsn)}: {exc}"
            ) from exc
        try:
            await _prepare(pool, schema_name)
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    async def _write(self, statement: str, *arguments: Any) -> bool:
        status = await self._pool.execute(statement, *arguments)
        # "INSERT 0 <rows>": 0 rows when ON CONFLICT neither inserted nor updated.
        return int(status.rsplit(" ", 1)[-1]) > 0

    async def update_roaming(
        self,
        device: str,
        *,
        roaming: bool | None,
        country_code: int | None,
        country_name: list[str] | None,
        time: datetime,
        event_id: str,
    ) -> bool:
        """Replace the device's roaming group if this event wins."""
        return await self._write(
            schema.UPDATE_ROAMING,
            device,
            roaming,
            country_code,
            country_name_to_json(country_name),
            utc(time),
            event_id,
        )

    async def update_reachability(
        self, device: str, *, reachability: str, time: datetime, event_id: str
    ) -> bool:
        """Replace the device's reachability if this event wins."""
        check_reachability(reachability)
        return await self._write(
            schema.UPDATE_REACHABILITY, device, reachability, utc(time), event_id
        )

    async def update_subscription(
        self,
        subscription_id: str,
        *,
        api: str,
        status: str,
        termination_reason: str | None,
        time: datetime,
        event_id: str,
    ) -> bool:
        """Replace the subscription if this event wins."""
        check_subscription_status(status)
        return await self._write(
            schema.UPDATE_SUBSCRIPTION,
            subscription_id,
            api,
            status,
            termination_reason,
            utc(time),
            event_id,
        )

    async def record_message_status(
        self, message_id: str, *, notification_type: str, status: str, time: datetime, event_id: str
    ) -> bool:
        """Add a status to the message's history, keeping the earliest event per status."""
        return await self._write(
            schema.RECORD_MESSAGE_STATUS, message_id, status, notification_type, utc(time), event_id
        )

    async def record_inbound_sms(
        self,
        message_id: str,
        *,
        source_number: str | None,
        destination_number: str | None,
        message: str | None,
        received_time: datetime | None,
        event_id: str,
    ) -> bool:
        """Keep an inbound SMS; the first write wins."""
        return await self._write(
            schema.RECORD_INBOUND_SMS,
            message_id,
            source_number,
            destination_number,
            message,
            None if received_time is None else utc(received_time),
            event_id,
        )

    async def device(self, key: str) -> dict[str, Any] | None:
        """The device's state, or None when nothing is known about it."""
        row = await self._pool.fetchrow(schema.SELECT_DEVICE, key)
        if row is None:
            return None
        return device_json(
            device=row["device"],
            roaming=row["roaming"],
            country_code=row["country_code"],
            country_name=country_name_from_json(row["country_name"]),
            roaming_time=row["roaming_time"],
            reachability=row["reachability"],
            reachability_time=row["reachability_time"],
        )

    async def subscription(self, subscription_id: str) -> dict[str, Any] | None:
        """The subscription's state, or None when unknown."""
        row = await self._pool.fetchrow(schema.SELECT_SUBSCRIPTION, subscription_id)
        if row is None:
            return None
        return subscription_json(
            subscription_id=row["subscription_id"],
            api=row["api"],
            status=row["status"],
            termination_reason=row["termination_reason"],
            status_time=row["status_time"],
        )

    async def message(self, message_id: str) -> dict[str, Any] | None:
        """The message's current status and history, or None when unknown."""
        rows = await self._pool.fetch(schema.SELECT_MESSAGE, message_id)
        return message_json(
            message_id,
            (
                StatusEntry(
                    status=row["status"],
                    notification_type=row["notification_type"],
                    time=row["status_time"],
                    event_id=row["event_id"],
                )
                for row in rows
            ),
        )

    async def inbound(self, message_id: str) -> dict[str, Any] | None:
        """The inbound SMS without its text, or None when unknown."""
        row = await self._pool.fetchrow(schema.SELECT_INBOUND, message_id)
        if row is None:
            return None
        return inbound_json(
            message_id=row["message_id"],
            source_number=row["source_number"],
            destination_number=row["destination_number"],
            received_time=row["received_time"],
        )

    async def close(self) -> None:
        """Close the pool, waiting for calls in flight."""
        await self._pool.close()


async def _prepare(pool: asyncpg.Pool, schema_name: str | None) -> None:
    """Create the schema (if named) and the tables, serialised across processes."""
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _DDL_LOCK_KEY)
        if schema_name is not None:
            await connection.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(schema_name)}")
            await connection.execute(f"SET LOCAL search_path TO {_quote(schema_name)}")
        for statement in schema.create_tables(schema.POSTGRES_TYPES):
            await connection.execute(statement)
