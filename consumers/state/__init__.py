"""Durable state the built-in workers keep about devices, subscriptions and messages.

``open_store(url)`` picks the backend from the URL: ``sqlite:///./relative.db``,
``sqlite:////absolute.db``, or ``postgresql://...`` / ``postgres://...`` (optionally with
``?schema=<name>``). Both backends behave the same; the rule is in ``writes.py``
(``precedence.py`` says what beats what).
"""

from __future__ import annotations

from consumers.state.store import (
    InvalidStateURL,
    StateStore,
    StateStoreError,
    StateStoreUnavailable,
)

__all__ = [
    "InvalidStateURL",
    "StateStore",
    "StateStoreError",
    "StateStoreUnavailable",
    "open_store",
]


async def open_store(url: str) -> StateStore:
    """Open the store ``url`` names, creating its tables on first use.

    Raises InvalidStateURL for a URL no backend takes, StateStoreUnavailable when the
    database cannot be opened or reached.
    """
    # Backends are imported here, so a SQLite deployment never loads asyncpg and vice versa.
    scheme = url.partition(":")[0].lower()
    if scheme == "sqlite":
        from consumers.state.sqlite import SQLiteStateStore

        return await SQLiteStateStore.open(url)
    if scheme in ("postgresql", "postgres"):
        from consumers.state.postgres import PostgresStateStore

        return await PostgresStateStore.open(url)
    raise InvalidStateURL(
        f"state URL must start with sqlite:///, postgresql:// or postgres://: {url!r}"
    )
