"""The state store on SQLite: one file, shared by several worker processes.

One aiosqlite connection per store, in autocommit mode: every write is one statement, so it
has committed when it returns. WAL lets readers run beside the writer, and the busy timeout
makes writers from other processes wait for each other instead of failing.

Times are stored as fixed-width UTC text (``2023-01-17T13:18:23.682000Z``), so comparing
the text compares the instants, to the microsecond.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from typing import Any

import aiosqlite

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

URL_PREFIX = "sqlite:///"
BUSY_TIMEOUT_S = 30.0
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def sqlite_path(url: str) -> str:
    """The file path in ``sqlite:///relative.db`` or ``sqlite:////absolute.db``."""
    if not url.startswith(URL_PREFIX):
        raise InvalidStateURL(f"a SQLite state URL starts with {URL_PREFIX!r}: {url!r}")
    path = url.removeprefix(URL_PREFIX)
    if not path or "?" in path or "#" in path:
        raise InvalidStateURL(f"a SQLite state URL is {URL_PREFIX}<path> with no query: {url!r}")
    return path


def to_text(moment: datetime) -> str:
    """Fixed-width UTC text whose order is time order (years 1 to 9999)."""
    return f"{utc(moment).replace(tzinfo=None).isoformat(timespec='microseconds')}Z"


def from_text(text: str) -> datetime:
    """Inverse of ``to_text``."""
    return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)


def _optional_time(text: str | None) -> datetime | None:
    return None if text is None else from_text(text)


class SQLiteStateStore:
    """``StateStore`` on a SQLite file; create it with ``open``."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db = connection

    @classmethod
    async def open(cls, url: str) -> SQLiteStateStore:
        """Open (creating if needed) the database file and its tables."""
        path = sqlite_path(url)
        # Probe first: when aiosqlite itself fails to connect it leaves its thread to finish
        # after we return, which may then find the event loop closed.
        try:
            await asyncio.to_thread(_probe, path)
        except sqlite3.Error as exc:
            raise StateStoreUnavailable(f"cannot open SQLite database {path!r}: {exc}") from exc
        connection = aiosqlite.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            await connection
        except sqlite3.Error as exc:
            raise StateStoreUnavailable(f"cannot open SQLite database {path!r}: {exc}") from exc
        try:
            await _prepare(connection)
        except sqlite3.Error as exc:
            await connection.close()
            raise StateStoreUnavailable(f"cannot prepare SQLite database {path!r}: {exc}") from exc
        except BaseException:
            await connection.close()
            raise
        return cls(connection)

    async def _write(self, statement: str, parameters: tuple[Any, ...]) -> bool:
        async with self._db.execute(statement, parameters) as cursor:
            return cursor.rowcount > 0

    async def _fetch(self, statement: str, key: str) -> list[sqlite3.Row]:
        rows = await self._db.execute_fetchall(statement, (key,))
        return list(rows)

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
            _UPDATE_ROAMING,
            (
                device,
                roaming,
                country_code,
                country_name_to_json(country_name),
                to_text(time),
                event_id,
            ),
        )

    async def update_reachability(
        self, device: str, *, reachability: str, time: datetime, event_id: str
    ) -> bool:
        """Replace the device's reachability if this event wins."""
        check_reachability(reachability)
        return await self._write(
            _UPDATE_REACHABILITY, (device, reachability, to_text(time), event_id)
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
            _UPDATE_SUBSCRIPTION,
            (subscription_id, api, status, termination_reason, to_text(time), event_id),
        )

    async def record_message_status(
        self, message_id: str, *, notification_type: str, status: str, time: datetime, event_id: str
    ) -> bool:
        """Add a status to the message's history, keeping the earliest event per status."""
        return await self._write(
            _RECORD_MESSAGE_STATUS,
            (message_id, status, notification_type, to_text(time), event_id),
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
        received = None if received_time is None else to_text(received_time)
        return await self._write(
            _RECORD_INBOUND_SMS,
            (message_id, source_number, destination_number, message, received, event_id),
        )

    async def device(self, key: str) -> dict[str, Any] | None:
        """The device's state, or None when nothing is known about it."""
        rows = await self._fetch(_SELECT_DEVICE, key)
        if not rows:
            return None
        row = rows[0]
        return device_json(
            device=row["device"],
            roaming=None if row["roaming"] is None else bool(row["roaming"]),
            country_code=row["country_code"],
            country_name=country_name_from_json(row["country_name"]),
            roaming_time=_optional_time(row["roaming_time"]),
            reachability=row["reachability"],
            reachability_time=_optional_time(row["reachability_time"]),
        )

    async def subscription(self, subscription_id: str) -> dict[str, Any] | None:
        """The subscription's state, or None when unknown."""
        rows = await self._fetch(_SELECT_SUBSCRIPTION, subscription_id)
        if not rows:
            return None
        row = rows[0]
        return subscription_json(
            subscription_id=row["subscription_id"],
            api=row["api"],
            status=row["status"],
            termination_reason=row["termination_reason"],
            status_time=from_text(row["status_time"]),
        )

    async def message(self, message_id: str) -> dict[str, Any] | None:
        """The message's current status and history, or None when unknown."""
        rows = await self._fetch(_SELECT_MESSAGE, message_id)
        return message_json(
            message_id,
            (
                StatusEntry(
                    status=row["status"],
                    notification_type=row["notification_type"],
                    time=from_text(row["status_time"]),
                    event_id=row["event_id"],
                )
                for row in rows
            ),
        )

    async def inbound(self, message_id: str) -> dict[str, Any] | None:
        """The inbound SMS without its text, or None when unknown."""
        rows = await self._fetch(_SELECT_INBOUND, message_id)
        if not rows:
            return None
        row = rows[0]
        return inbound_json(
            message_id=row["message_id"],
            source_number=row["source_number"],
            destination_number=row["destination_number"],
            received_time=_optional_time(row["received_time"]),
        )

    async def close(self) -> None:
        """Close the connection."""
        await self._db.close()


def _probe(path: str) -> None:
    """Open and close the file once, so an unopenable path fails here."""
    sqlite3.connect(path, timeout=BUSY_TIMEOUT_S).close()


async def _prepare(connection: aiosqlite.Connection) -> None:
    """Switch to WAL and create the tables; safe when several processes do it at once.

    Switching a new file to WAL can fail at once with SQLITE_BUSY, without the busy handler,
    while another connection is doing the same; that is retried until ``BUSY_TIMEOUT_S``.
    """
    connection.row_factory = sqlite3.Row
    await connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            await _create_tables(connection)
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
            if not busy or loop.time() + delay > deadline:
                raise
        else:
            return
        await asyncio.sleep(delay)  # back off from the other opener, then try again
        delay = min(delay * 2, 0.25)


async def _create_tables(connection: aiosqlite.Connection) -> None:
    await connection.execute("PRAGMA journal_mode = WAL")
    await connection.execute("BEGIN IMMEDIATE")
    try:
        for statement in schema.create_tables(schema.SQLITE_TYPES):
            await connection.execute(statement)
    except BaseException:
        await connection.rollback()
        raise
    await connection.commit()


_UPDATE_ROAMING = schema.sqlite_sql(schema.UPDATE_ROAMING)
_UPDATE_REACHABILITY = schema.sqlite_sql(schema.UPDATE_REACHABILITY)
_UPDATE_SUBSCRIPTION = schema.sqlite_sql(schema.UPDATE_SUBSCRIPTION)
_RECORD_MESSAGE_STATUS = schema.sqlite_sql(schema.RECORD_MESSAGE_STATUS)
_RECORD_INBOUND_SMS = schema.sqlite_sql(schema.RECORD_INBOUND_SMS)
_SELECT_DEVICE = schema.sqlite_sql(schema.SELECT_DEVICE)
_SELECT_SUBSCRIPTION = schema.sqlite_sql(schema.SELECT_SUBSCRIPTION)
_SELECT_MESSAGE = schema.sqlite_sql(schema.SELECT_MESSAGE)
_SELECT_INBOUND = schema.sqlite_sql(schema.SELECT_INBOUND)
