"""The tables and statements both backends run, written once with ``$n`` placeholders.

SQLite takes ``?n`` for ``$n`` (see ``sqlite_sql``); column types differ per backend
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


UPDATE_ROAMING = """
INSERT INTO devices AS d
    (device, roaming, country_code, country_name, roaming_time, roaming_event_id)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (device) DO UPDATE SET
    roaming = excluded.roaming,
    country_code = excluded.country_code,
    country_name = excluded.country_name,
    roaming_time = excluded.roaming_time,
    roaming_event_id = excluded.roaming_event_id
WHERE d.roaming_event_id IS NULL
    OR (excluded.roaming_time, excluded.roaming_event_id) > (d.roaming_time, d.roaming_event_id)
"""

UPDATE_REACHABILITY = """
INSERT INTO devices AS d (device, reachability, reachability_time, reachability_event_id)
VALUES ($1, $2, $3, $4)
ON CONFLICT (device) DO UPDATE SET
    reachability = excluded.reachability,
    reachability_time = excluded.reachability_time,
    reachability_event_id = excluded.reachability_event_id
WHERE d.reachability_event_id IS NULL
    OR (excluded.reachability_time, excluded.reachability_event_id)
        > (d.reachability_time, d.reachability_event_id)
"""

UPDATE_SUBSCRIPTION = """
INSERT INTO subscriptions AS s
    (subscription_id, api, status, termination_reason, status_time, event_id)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (subscription_id) DO UPDATE SET
    api = excluded.api,
    status = excluded.status,
    termination_reason = excluded.termination_reason,
    status_time = excluded.status_time,
    event_id = excluded.event_id
WHERE (excluded.status_time, excluded.event_id) > (s.status_time, s.event_id)
"""

# Per status the earliest event is kept: note the "<".
RECORD_MESSAGE_STATUS = """
INSERT INTO message_statuses AS m (message_id, status, notification_type, status_time, event_id)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (message_id, status) DO UPDATE SET
    notification_type = excluded.notification_type,
    status_time = excluded.status_time,
    event_id = excluded.event_id
WHERE (excluded.status_time, excluded.event_id) < (m.status_time, m.event_id)
"""

RECORD_INBOUND_SMS = """
INSERT INTO inbound_messages
    (message_id, source_number, destination_number, message, received_time, event_id)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (message_id) DO NOTHING
"""

SELECT_DEVICE = """
SELECT device, roaming, country_code, country_name, roaming_time, reachability, reachability_time
FROM devices WHERE device = $1
"""

SELECT_SUBSCRIPTION = """
SELECT subscription_id, api, status, termination_reason, status_time
FROM subscriptions WHERE subscription_id = $1
"""

SELECT_MESSAGE = """
SELECT status, notification_type, status_time, event_id
FROM message_statuses WHERE message_id = $1
"""

SELECT_INBOUND = """
SELECT message_id, source_number, destination_number, received_time
FROM inbound_messages WHERE message_id = $1
"""

_PLACEHOLDER = re.compile(r"\$(\d+)")


def sqlite_sql(statement: str) -> str:
    """The statement with SQLite's numbered placeholders (``?1``) for ``$1``."""
    return _PLACEHOLDER.sub(r"?\1", statement)
