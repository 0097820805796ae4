"""The state store on SQLite: one file, shared by several worker processes.

One aiosqlite connection per store, in autocommit mode: every write is one statement, so it
has committed when it returns; a batch of writes is one transaction, under a lock so no other
write of this store joins it. WAL lets readers run beside the writer, and the busy timeout
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
from consumers.state.sql import Rows, SqlStateStore
from consumers.state.store import InvalidStateURL, StateStoreUnavailable
from consumers.state.writes import utc

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


class SQLiteStateStore(SqlStateStore):
    """``StateStore`` on a SQLite file; create it with ``open``."""

    _statements = schema.SQLITE_STATEMENTS

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db = connection
        # Held while a batch's transaction is open, so no other write lands in it.
        self._lock = asyncio.Lock()

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
        return await cls(connection)._rekeyed()

    async def _write_batch(self, batch: list[tuple[str, Rows]]) -> None:
        async with self._lock:
            try:
                await self._db.execute("BEGIN IMMEDIATE")
                for name, rows in batch:
                    await self._db.executemany(getattr(self._statements, name), rows)
                await self._db.commit()
            except BaseException:
                # Runs after whatever was sent before (even when cancelled mid-way), and is a
                # no-op outside a transaction: no later write can land in this one.
                await self._db.rollback()
                raise

    async def _fetch(self, statement: str, key: str) -> list[sqlite3.Row]:
        async with self._lock:
            return list(await self._db.execute_fetchall(statement, (key,)))

    def _encode_time(self, moment: datetime) -> str:
        return to_text(moment)

    def _decode_time(self, value: Any) -> datetime:
        return from_text(value)

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
        await _migrate(connection)
    except BaseException:
        await connection.rollback()
        raise
    await connection.commit()


async def _migrate(connection: aiosqlite.Connection) -> None:
    """Add the columns a store of an earlier version lacks, then fill them (``schema``)."""
    added = False
    for table, columns in schema.added_columns(schema.SQLITE_TYPES).items():
        # Table names are the literals in ``schema``, never input.
        info = await connection.execute_fetchall(f"PRAGMA table_info({table})")
        existing = {row[1] for row in info}
        for name, type_ in columns:
            if name not in existing:
                await connection.execute(f"ALTER TABLE {table} ADD COLUMN {name} {type_}")
                added = True
    if added:
        for statement in schema.MIGRATION:
            await connection.execute(statement)
