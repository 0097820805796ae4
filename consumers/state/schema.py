"""The tables and statements both backends run, written once with ``$n`` placeholders.

SQLite takes ``?n`` for ``$n`` (see ``sqlite_sql``; ``SQLITE_STATEMENTS`` and
``POSTGRES_STATEMENTS`` bundle each backend's statements); column types differ per backend
(``ColumnTypes``). Every write is a single ``INSERT ... ON CONFLICT`` statement per table
whose conditions are the rule in ``writes`` (the greater ``Version`` wins) as row-value
comparisons, so the database applies it atomically and concurrent writers need no
read-modify-write.

Tables (each field group stores its version: ``*_tier``, ``*_time``, ``*_rank``,
``*_source``, ``*_event_id``):

- ``devices``: one row per device key; three field groups ordered on their own: roaming,
  country, reachability. One statement writes whichever groups a batch has for a device.
- ``subscriptions``: one row per subscription, replaced as a whole.
- ``message_statuses``: one row per (message, status), the earliest event for that status;
  the current status is derived when reading (``writes.current_status``).
- ``inbound_messages``: one row per inbound SMS; the greatest ``(source, event_id)`` wins.

``MIGRATION`` brings a store created by an earlier version up to this one (columns added,
then filled from what the old rows say); ``README.md`` "State rules" documents it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from consumers.state.precedence import FINAL_MESSAGE_STATUSES


class ColumnTypes(NamedTuple):
    """SQL types that differ between the backends."""

    key: str  # ids, event ids and sources; compared byte-wise (code point order) in both
    time: str
    boolean: str
    json: str


SQLITE_TYPES = ColumnTypes(key="TEXT", time="TEXT", boolean="INTEGER", json="TEXT")
POSTGRES_TYPES = ColumnTypes(
    key='text COLLATE "C"', time="timestamptz", boolean="boolean", json="jsonb"
)


def _version_columns(prefix: str, types: ColumnTypes) -> list[tuple[str, str]]:
    """A field group's version columns; a whole-row group (no prefix) has ``status_time``."""
    return [
        (f"{prefix}tier", "integer"),
        (f"{prefix}time" if prefix else "status_time", types.time),
        (f"{prefix}rank", "integer"),
        (f"{prefix}source", types.key),
        (f"{prefix}event_id", types.key),
    ]


def columns(types: ColumnTypes) -> dict[str, list[tuple[str, str]]]:
    """Every table's columns after its key, as (name, type), in statement order."""
    k = types.key
    return {
        "devices": [
            ("roaming", types.boolean),
            *_version_columns("roaming_", types),
            ("country_code", "integer"),
            ("country_name", types.json),
            *_version_columns("country_", types),
            ("reachability", "text"),
            *_version_columns("reachability_", types),
        ],
        "subscriptions": [
            ("api", "text"),
            ("status", "text"),
            ("termination_reason", "text"),
            *_version_columns("", types),
        ],
        "message_statuses": [
            ("notification_type", "text"),
            *_version_columns("", types),
        ],
        "inbound_messages": [
            ("source_number", "text"),
            ("destination_number", "text"),
            ("message", "text"),
            ("received_time", types.time),
            ("source", k),
            ("event_id", k),
        ],
    }


KEYS = {
    "devices": ("device",),
    "subscriptions": ("subscription_id",),
    "message_statuses": ("message_id", "status"),
    "inbound_messages": ("message_id",),
}
# Columns the first version's tables had; only these may be NOT NULL (a migrated row has
# no value for a column added later until MIGRATION fills it).
_FIRST = {
    "subscriptions": {"api", "status", "status_time", "event_id"},
    "message_statuses": {"notification_type", "status_time", "event_id"},
    "inbound_messages": {"event_id"},
}


def create_tables(types: ColumnTypes) -> list[str]:
    """``CREATE TABLE IF NOT EXISTS`` statements for the whole store."""
    statements = []
    for table, cols in columns(types).items():
        key = KEYS[table]
        key_cols = [f"{name} {types.key} NOT NULL" for name in key]
        required = _FIRST.get(table, set())
        body = [f"{name} {type_}{' NOT NULL' if name in required else ''}" for name, type_ in cols]
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {table} (\n    "
            + ",\n    ".join([*key_cols, *body, f"PRIMARY KEY ({', '.join(key)})"])
            + "\n)"
        )
    return statements


def added_columns(types: ColumnTypes) -> dict[str, list[tuple[str, str]]]:
    """The columns each table gained since the first version (all nullable)."""
    first_devices = {
        "roaming",
        "country_code",
        "country_name",
        "roaming_time",
        "roaming_event_id",
        "reachability",
        "reachability_time",
        "reachability_event_id",
    }
    first = {"devices": first_devices, **_FIRST}
    first["inbound_messages"] = {
        "source_number",
        "destination_number",
        "message",
        "received_time",
        "event_id",
    }
    first["subscriptions"] = first["subscriptions"] | {"termination_reason"}
    return {
        table: [(name, type_) for name, type_ in cols if name not in first[table]]
        for table, cols in columns(types).items()
    }


_FINAL_LIST = ", ".join(f"'{status}'" for status in sorted(FINAL_MESSAGE_STATUSES))
# Run once, right after the columns of ``added_columns`` were added to an earlier store: the
# versions of the rows already there. The old roaming group held the country too: its
# country ranks as carried when it has one; old rows have no source ('' sorts first).
MIGRATION = (
    """UPDATE devices SET roaming_tier = 0, roaming_rank = 0, roaming_source = ''
       WHERE roaming_event_id IS NOT NULL AND roaming_source IS NULL""",
    """UPDATE devices SET country_tier = 0, country_time = roaming_time,
           country_rank = CASE WHEN country_code IS NULL AND country_name IS NULL
                          THEN 0 ELSE 1 END,
           country_source = '', country_event_id = roaming_event_id
       WHERE roaming_event_id IS NOT NULL AND country_event_id IS NULL""",
    """UPDATE devices SET reachability_tier = 0, reachability_rank = 0, reachability_source = ''
       WHERE reachability_event_id IS NOT NULL AND reachability_source IS NULL""",
    """UPDATE subscriptions SET tier = CASE WHEN status = 'ENDED' THEN 1 ELSE 0 END,
           rank = CASE WHEN status = 'ENDED' THEN 2 ELSE 0 END, source = ''
       WHERE source IS NULL""",
    # The status list is the literal set in ``precedence``, never input.
    f"""UPDATE message_statuses SET
           tier = CASE WHEN status IN ({_FINAL_LIST}) THEN 1 ELSE 0 END, rank = 0, source = ''
       WHERE source IS NULL""",  # noqa: S608
    """UPDATE inbound_messages SET source = '' WHERE source IS NULL""",
)


def _wins(prefix: str, operator: str = ">") -> str:
    """The offered group's version ``operator`` the stored one (a group the offered row does
    not carry never wins; one the stored row lacks always loses)."""
    names = [name for name, _ in _version_columns(prefix, SQLITE_TYPES)]
    offered = ", ".join(f"excluded.{name}" for name in names)
    stored = ", ".join(f"stored.{name}" for name in names)
    event_id = f"{prefix}event_id"
    return (
        f"(excluded.{event_id} IS NOT NULL AND "
        f"(stored.{event_id} IS NULL OR ({offered}) {operator} ({stored})))"
    )


def _insert(table: str) -> tuple[list[str], str]:
    names = [*KEYS[table], *(name for name, _ in columns(SQLITE_TYPES)[table])]
    values = ", ".join(f"${number}" for number in range(1, len(names) + 1))
    # Only ever built at import, from the literals above: never with input.
    head = f"INSERT INTO {table} AS stored ({', '.join(names)})\nVALUES ({values})\n"
    return names, head


def _upsert_devices() -> str:
    """One row per device; each of its groups is replaced only where the offered one wins
    (SET expressions all read the row as it was)."""
    _names, head = _insert("devices")
    groups = {
        "roaming_": ["roaming"],
        "country_": ["country_code", "country_name"],
        "reachability_": ["reachability"],
    }
    sets = []
    for prefix, values in groups.items():
        wins = _wins(prefix)
        for name in [*values, *(n for n, _ in _version_columns(prefix, SQLITE_TYPES))]:
            sets.append(f"{name} = CASE WHEN {wins} THEN excluded.{name} ELSE stored.{name} END")
    where = " OR ".join(_wins(prefix) for prefix in groups)
    return (
        f"{head}ON CONFLICT (device) DO UPDATE SET\n    "
        + ",\n    ".join(sets)
        + (f"\nWHERE {where}\n")
    )


def _upsert_whole(table: str, when: str) -> str:
    names, head = _insert(table)
    assignments = ",\n    ".join(
        f"{name} = excluded.{name}" for name in names if name not in KEYS[table]
    )
    key = ", ".join(KEYS[table])
    return f"{head}ON CONFLICT ({key}) DO UPDATE SET\n    {assignments}\nWHERE {when}\n"


def _unnest(single: str, table: str) -> str:
    """``single`` for many rows: ``$n`` is an array of the n-th column's values."""
    pg_types = [
        "text" if "COLLATE" in type_ else type_
        for type_ in [
            *(POSTGRES_TYPES.key for _ in KEYS[table]),
            *(type_ for _, type_ in columns(POSTGRES_TYPES)[table]),
        ]
    ]
    arrays = ", ".join(f"${number}::{type_}[]" for number, type_ in enumerate(pg_types, start=1))
    head, _values, tail = single.partition("\nVALUES (")
    tail = tail.partition(")\n")[2]
    return f"{head}\nSELECT * FROM unnest({arrays})\n{tail}"


class Statements(NamedTuple):
    """Every statement a store runs; the defaults use ``$n`` placeholders (PostgreSQL's).

    The write statements take a row's key columns then ``columns()`` in order.
    """

    devices: str = _upsert_devices()
    subscriptions: str = _upsert_whole("subscriptions", _wins(""))
    # Per status the earliest event is kept: note the "<".
    message_statuses: str = _upsert_whole("message_statuses", _wins("", "<"))
    inbound_messages: str = _upsert_whole(
        "inbound_messages",
        "(excluded.source, excluded.event_id) > (stored.source, stored.event_id)",
    )

    # Keys from "1" up to "9…": phone numbers an earlier version stored without their "+".
    select_digit_devices: str = """
SELECT * FROM devices WHERE device >= $1 AND device < ':'
"""

    delete_device: str = """
DELETE FROM devices WHERE device = $1
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
SELECT status, notification_type, tier, status_time, rank, source, event_id
FROM message_statuses WHERE message_id = $1
"""

    select_inbound: str = """
SELECT message_id, source_number, destination_number, received_time
FROM inbound_messages WHERE message_id = $1
"""


POSTGRES_STATEMENTS = Statements()


class PostgresBatchStatements(NamedTuple):
    """PostgreSQL's statements writing many rows at once, one array per column. The rows
    must have distinct keys (an upsert cannot touch a row twice); sorted, so writers lock
    in order."""

    devices: str = _unnest(POSTGRES_STATEMENTS.devices, "devices")
    subscriptions: str = _unnest(POSTGRES_STATEMENTS.subscriptions, "subscriptions")
    message_statuses: str = _unnest(POSTGRES_STATEMENTS.message_statuses, "message_statuses")
    inbound_messages: str = _unnest(POSTGRES_STATEMENTS.inbound_messages, "inbound_messages")
    delete_device: str = "DELETE FROM devices WHERE device = ANY($1::text[])"


_PLACEHOLDER = re.compile(r"\$(\d+)")


def sqlite_sql(statement: str) -> str:
    """The statement with SQLite's numbered placeholders (``?1``) for ``$1``."""
    return _PLACEHOLDER.sub(r"?\1", statement)


POSTGRES_BATCH_STATEMENTS = PostgresBatchStatements()
SQLITE_STATEMENTS = Statements._make(map(sqlite_sql, POSTGRES_STATEMENTS))
