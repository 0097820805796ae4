"""The tables and statements both backends run, written once with ``$n`` placeholders.

SQLite takes ``?n`` for ``$n`` (see ``sqlite_sql``; ``SQLITE_STATEMENTS`` and
``POSTGRES_STATEMENTS`` bundle each backend's statements); column types differ per backend
(``ColumnTypes``). Every write is a single ``INSERT ... ON CONFLICT`` statement whose
``WHERE`` is the rule in ``store.wins`` as a row-value comparison, so the database applies it
atomically and concurrent writers need no read-modify-write.

Tables:

- ``devices``: one row per device key; two independent field groups, each with the time and
  event id that set it (``roaming_*``, ``reachability_*``).
- ``subscriptions``: one row per subscription, replaced as a whole.
- ``message_statuses``: one row per (message, status), the earliest event for that status;
  the current status is derived when reading (the entry that wins by ``(time, event_id)``).
- ``inbound_messages``: one row per inbound SMS, first write wins.
"""

from __future__ import annotations

import re
from typing import NamedTuple


class ColumnTypes(NamedTuple):
    """SQL types that differ between the backends."""

    key: str  # ids and event ids; compared byte-wise (code point order) in both
    time: str
    boolean: str
    json: str


SQLITE_TYPES = ColumnTypes(key="TEXT", time="TEXT", boolean="INTEGER", json="TEXT")
POSTGRES_TYPES = ColumnTypes(
    key='text COLLATE "C"', time="timestamptz", boolean="boolean", json="jsonb"
)


def create_tables(types: ColumnTypes) -> list[str]:
    """``CREATE TABLE IF NOT EXISTS`` statements for the whole store."""
    k, t = types.key, types.time
    return [
        f"""CREATE TABLE IF NOT EXISTS devices (
            device {k} PRIMARY KEY,
            roaming {types.boolean},
            country_code integer,
            country_name {types.json},
            roaming_time {t},
            roaming_event_id {k},
            reachability text,
            reachability_time {t},
            reachability_event_id {k}
        )""",
        f"""CREATE TABLE IF NOT EXISTS subscriptions (
            subscription_id {k} PRIMARY KEY,
            api text NOT NULL,
            status text NOT NULL,
            termination_reason text,
            status_time {t} NOT NULL,
            event_id {k} NOT NULL
        )""",
        f"""CREATE TABLE IF NOT EXISTS message_statuses (
            message_id {k} NOT NULL,
            status text NOT NULL,
            notification_type text NOT NULL,
            status_time {t} NOT NULL,
            event_id {k} NOT NULL,
            PRIMARY KEY (message_id, status)
        )""",
        f"""CREATE TABLE IF NOT EXISTS inbound_messages (
            message_id {k} PRIMARY KEY,
            source_number text,
            destination_number text,
            message text,
            received_time {t},
            event_id {k} NOT NULL
        )""",
    ]


def _upsert(table: str, key: str, columns: str, *, when: str) -> str:
    """``INSERT`` one row of ``key`` then ``columns``, bound to ``$1``, ``$2``, ... in order.

    If ``key`` is taken, ``columns`` are overwritten only ``when`` holds; ``stored`` is the
    row already there, ``excluded`` the one offered.
    """
    names = [*key.split(", "), *columns.split(", ")]
    values = ", ".join(f"${number}" for number in range(1, len(names) + 1))
    assignments = ",\n    ".join(f"{name} = excluded.{name}" for name in columns.split(", "))
    # Only ever called at import, with the literals in ``Statements``: never with input.
    return f"""
INSERT INTO {table} AS stored ({", ".join(names)})
VALUES ({values})
ON CONFLICT ({key}) DO UPDATE SET
    {assignments}
WHERE {when}
"""  # noqa: S608


def _unnest_upsert(single: str, types: str) -> str:
    """``single`` (an ``_upsert`` statement, or an insert) for many rows: ``$n`` is an array
    of the n-th column's values, of the given PostgreSQL ``types``."""
    arrays = ", ".join(
        f"${number}::{type_}[]" for number, type_ in enumerate(types.split(", "), start=1)
    )
    head, _values, tail = single.partition("\nVALUES (")
    tail = tail.partition(")\n")[2]
    return f"{head}\nSELECT * FROM unnest({arrays})\n{tail}"


def _compare(time: str, event_id: str, operator: str) -> str:
    """The offered row's ``(time, event_id)`` ``operator`` the stored row's: ``store.wins``."""
    return f"(excluded.{time}, excluded.{event_id}) {operator} (stored.{time}, stored.{event_id})"


class Statements(NamedTuple):
    """Every statement a store runs; the defaults use ``$n`` placeholders (PostgreSQL's)."""

    update_roaming: str = _upsert(
        "devices",
        "device",
        "roaming, country_code, country_name, roaming_time, roaming_event_id",
        when="stored.roaming_event_id IS NULL OR "
        + _compare("roaming_time", "roaming_event_id", ">"),
    )

    update_reachability: str = _upsert(
        "devices",
        "device",
        "reachability, reachability_time, reachability_event_id",
        when="stored.reachability_event_id IS NULL OR "
        + _compare("reachability_time", "reachability_event_id", ">"),
    )

    update_subscription: str = _upsert(
        "subscriptions",
        "subscription_id",
        "api, status, termination_reason, status_time, event_id",
        when=_compare("status_time", "event_id", ">"),
    )

    # Per status the earliest event is kept: note the "<" (``store.keeps_earlier``).
    record_message_status: str = _upsert(
        "message_statuses",
        "message_id, status",
        "notification_type, status_time, event_id",
        when=_compare("status_time", "event_id", "<"),
    )

    record_inbound_sms: str = """
INSERT INTO inbound_messages
    (message_id, source_number, destination_number, message, received_time, event_id)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (message_id) DO NOTHING
"""

    select_device: str = """
SELECT device, roaming, country_code, country_name, roaming_time, reachability, reachability_time
FROM devices WHERE device = $1
"""

    select_subscription: str = """
SELECT subscription_id, api, status, termination_reason, status_time
FROM subscriptions WHERE subscription_id = $1
"""

    select_message: str = """
SELECT status, notification_type, status_time, event_id
FROM message_statuses WHERE message_id = $1
"""

    select_inbound: str = """
SELECT message_id, source_number, destination_number, received_time
FROM inbound_messages WHERE message_id = $1
"""


POSTGRES_STATEMENTS = Statements()


class PostgresBatchStatements(NamedTuple):
    """PostgreSQL's statements writing many rows at once, one array per column (``$n`` is
    the n-th column of the single-row statement of the same name). The rows must have
    distinct keys (an upsert cannot touch a row twice); sorted, so writers lock in order."""

    update_roaming: str = _unnest_upsert(
        POSTGRES_STATEMENTS.update_roaming, "text, boolean, integer, jsonb, timestamptz, text"
    )
    update_reachability: str = _unnest_upsert(
        POSTGRES_STATEMENTS.update_reachability, "text, text, timestamptz, text"
    )
    update_subscription: str = _unnest_upsert(
        POSTGRES_STATEMENTS.update_subscription, "text, text, text, text, timestamptz, text"
    )
    record_message_status: str = _unnest_upsert(
        POSTGRES_STATEMENTS.record_message_status, "text, text, text, timestamptz, text"
    )
    record_inbound_sms: str = _unnest_upsert(
        POSTGRES_STATEMENTS.record_inbound_sms, "text, text, text, text, timestamptz, text"
    )


_PLACEHOLDER = re.compile(r"\$(\d+)")


def sqlite_sql(statement: str) -> str:
    """The statement with SQLite's numbered placeholders (``?1``) for ``$1``."""
    return _PLACEHOLDER.sub(r"?\1", statement)


POSTGRES_BATCH_STATEMENTS = PostgresBatchStatements()
SQLITE_STATEMENTS = Statements._make(map(sqlite_sql, POSTGRES_STATEMENTS))
