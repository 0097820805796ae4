"""The state store on PostgreSQL, through an asyncpg pool.

Every write is one autocommitted statement; a batch of writes is one per table (over
``unnest`` of arrays). ``?schema=<name>`` in the URL selects a schema
(created if missing) through ``search_path``; the rest of the URL goes to asyncpg unchanged.
Tables are created under a transaction-scoped advisory lock, so processes that start at the
same moment do not trip over each other's ``CREATE``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from consumers.state import schema
from consumers.state.sql import Rows, SqlStateStore
from consumers.state.store import InvalidStateURL, StateStoreUnavailable
from consumers.state.writes import utc

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


class PostgresStateStore(SqlStateStore):
    """``StateStore`` on PostgreSQL; create it with ``open``."""

    _statements = schema.POSTGRES_STATEMENTS
    _batch_statements = schema.POSTGRES_BATCH_STATEMENTS

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
                # The default reset sends a second query after every statement; the store
                # only runs single autocommitted statements and sets nothing per session.
                reset=_no_reset,
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
        return await cls(pool)._rekeyed()

    async def _write_batch(self, batch: list[tuple[str, Rows]]) -> None:
        # One autocommitted statement per table: a batch that fails part way has applied
        # whole statements only, and each is idempotent. No transaction spans two of them,
        # so no lock is held across statements (rows are locked in key order within one).
        for name, rows in batch:
            if len(rows) == 1:
                await self._pool.execute(getattr(self._statements, name), *rows[0])
            else:
                columns = [list(column) for column in zip(*rows, strict=True)]
                await self._pool.execute(getattr(self._batch_statements, name), *columns)

    async def _fetch(self, statement: str, key: str) -> list[asyncpg.Record]:
        return await self._pool.fetch(statement, key)

    def _encode_time(self, moment: datetime) -> datetime:
        return utc(moment)

    def _decode_time(self, value: Any) -> datetime:
        return cast(datetime, value)  # asyncpg reads timestamptz as an aware datetime

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
        await _migrate(connection)


async def _migrate(connection: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy) -> None:
    """Add the columns a store of an earlier version lacks, then fill them (``schema``)."""
    added = False
    for table, columns in schema.added_columns(schema.POSTGRES_TYPES).items():
        rows = await connection.fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = $1",
            table,
        )
        existing = {row["column_name"] for row in rows}
        for name, type_ in columns:
            if name not in existing:
                await connection.execute(f"ALTER TABLE {table} ADD COLUMN {name} {type_}")
                added = True
    if added:
        for statement in schema.MIGRATION:
            await connection.execute(statement)


async def _no_reset(_connection: asyncpg.Connection) -> None:
    """Pool connections need no reset between uses (see ``create_pool`` above)."""
