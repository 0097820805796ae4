"""Opening stores: tables on first use, opening twice, SQLite paths, PostgreSQL schemas, errors."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import asyncpg
import pytest

from consumers.state import StateStoreUnavailable, open_store
from consumers.state.postgres import split_url
from tests.state_fixtures import (  # noqa: F401 - pytest fixtures, registered by import
    pg_admin_fixture,
    pg_url_fixture,
    reach,
    state_url_fixture,
    v,
)

TABLES = {"devices", "subscriptions", "message_statuses", "inbound_messages"}


async def test_first_use_creates_tables_and_reopening_keeps_data(state_url: str) -> None:
    """Two stores opening a fresh database at once both work; a later open sees the data."""
    first, second = await asyncio.gather(open_store(state_url), open_store(state_url))
    try:
        await first.apply_writes([reach("SMS", v(), "+1")])
        assert await second.device("+1") is not None
    finally:
        await asyncio.gather(first.close(), second.close())
    third = await open_store(state_url)
    try:
        device = await third.device("+1")
        assert device is not None
        assert device["reachability"] == "SMS"
    finally:
        await third.close()


async def test_sqlite_relative_path_and_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sqlite:///./file.db is relative to the working directory, and the file is in WAL mode."""
    monkeypatch.chdir(tmp_path)
    store = await open_store("sqlite:///./relative.db")
    await store.close()
    with closing(sqlite3.connect(tmp_path / "relative.db")) as connection:
        (mode,) = connection.execute("PRAGMA journal_mode").fetchone()
        names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert mode == "wal"
    assert names >= TABLES


async def test_sqlite_unopenable_file_is_unavailable(tmp_path: Path) -> None:
    """A path in a missing directory gives StateStoreUnavailable naming the path."""
    url = f"sqlite:///{tmp_path / 'missing' / 'state.db'}"
    with pytest.raises(StateStoreUnavailable, match="missing"):
        await open_store(url)


async def test_postgres_schema_is_created_and_isolates(
    pg_url: Callable[[], str], pg_admin: asyncpg.Connection
) -> None:
    """schema= creates its own schema with the tables; two schemas do not see each other."""
    url_a, url_b = pg_url(), pg_url()
    store_a, store_b = await asyncio.gather(open_store(url_a), open_store(url_b))
    try:
        await store_a.apply_writes([reach("DATA", v(), "+1")])
        assert await store_a.device("+1") is not None
        assert await store_b.device("+1") is None
    finally:
        await asyncio.gather(store_a.close(), store_b.close())
    schema_a = split_url(url_a)[1]
    rows = await pg_admin.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema_a
    )
    assert {row["table_name"] for row in rows} == TABLES


async def test_postgres_dsn_given_to_asyncpg_has_no_schema_parameter(
    pg_url: Callable[[], str],
) -> None:
    """The store's own connections work, so asyncpg never saw schema= as a server setting."""
    url = pg_url()
    dsn, schema = split_url(url)
    assert "schema" not in dsn
    store = await open_store(url)
    try:
        await store.apply_writes([reach("SMS", v(), "+1")])
    finally:
        await store.close()
    connection = await asyncpg.connect(dsn, server_settings={"search_path": f'"{schema}"'})
    try:
        assert await connection.fetchval("SELECT count(*) FROM devices") == 1
    finally:
        await connection.close()


async def test_postgres_unreachable_is_unavailable_without_password() -> None:
    """A server that refuses connections gives StateStoreUnavailable, without the password."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://gateway:s3cret@127.0.0.1:{port}/gw?schema=x"
    with pytest.raises(StateStoreUnavailable, match=f"127.0.0.1:{port}/gw") as caught:
        await open_store(url)
    assert "s3cret" not in str(caught.value)
