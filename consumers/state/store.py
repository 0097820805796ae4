"""What a state store is, and how stored rows look as JSON (contract §5).

A store applies batches of writes (``consumers.state.writes``: the values, the versions and
the rule that the greater version wins) and reads entities back. Everything here is pure: the
backends (``sql.py``, driven by ``sqlite.py`` or ``postgres.py``) run the rule in SQL and hand
their rows to the shaping functions below.

Errors:

- ``StateStoreError``: base of the errors below.
- ``InvalidStateURL``: the state URL is malformed or names an unsupported backend (a
  configuration error, also a ``ValueError``).
- ``StateStoreUnavailable``: the database could not be opened or reached.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

import orjson

from consumers.state.writes import MessageStatusWrite, Write, current_status, history_order
from gateway.cloudevent import rfc3339


class StateStoreError(Exception):
    """Base class of the state store's errors."""


class InvalidStateURL(StateStoreError, ValueError):
    """The state URL is malformed or names an unsupported backend."""


class StateStoreUnavailable(StateStoreError):
    """The database could not be opened or reached."""


class StateStore(Protocol):
    """Durable state the built-in workers keep; a batch has committed when it returns."""

    async def apply_writes(self, writes: Iterable[Write]) -> None:
        """Apply a batch of writes, ending in the state that making each write alone, in any
        order, would give. ValueError (before anything is written) for a write the store
        refuses. Nothing is guaranteed about a batch that raised otherwise: some of its
        writes may have been applied (apply them again)."""
        ...

    async def device(self, key: str) -> dict[str, Any] | None:
        """The device's state, or None when nothing is known about it."""
        ...

    async def subscription(self, subscription_id: str) -> dict[str, Any] | None:
        """The subscription's state, or None when unknown."""
        ...

    async def message(self, message_id: str) -> dict[str, Any] | None:
        """The message's current status and history, or None when unknown."""
        ...

    async def inbound(self, message_id: str) -> dict[str, Any] | None:
        """The inbound SMS without its text, or None when unknown."""
        ...

    async def close(self) -> None:
        """Release the connection(s)."""
        ...


# --- rows -> JSON ----------------------------------------------------------------------------


def country_name_to_json(names: Iterable[str] | None) -> str | None:
    """The stored form of ``country_name``: a JSON array as text, or None."""
    return None if names is None else orjson.dumps(list(names)).decode()


def country_name_from_json(text: str | None) -> list[str] | None:
    """Inverse of ``country_name_to_json``."""
    if text is None:
        return None
    names: list[str] = orjson.loads(text)
    return names


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else rfc3339(moment)


def device_json(
    *,
    device: str,
    roaming: bool | None,
    country_code: int | None,
    country_name: list[str] | None,
    roaming_time: datetime | None,
    reachability: str | None,
    reachability_time: datetime | None,
) -> dict[str, Any]:
    """A device as ``event-gateway state device`` prints it."""
    return {
        "device": device,
        "roaming": roaming,
        "country_code": country_code,
        "country_name": country_name,
        "roaming_time": _time(roaming_time),
        "reachability": reachability,
        "reachability_time": _time(reachability_time),
    }


def subscription_json(
    *,
    subscription_id: str,
    api: str,
    status: str,
    termination_reason: str | None,
    status_time: datetime,
) -> dict[str, Any]:
    """A subscription as ``event-gateway state subscription`` prints it."""
    return {
        "subscription_id": subscription_id,
        "api": api,
        "status": status,
        "termination_reason": termination_reason,
        "status_time": rfc3339(status_time),
    }


def message_json(message_id: str, entries: Iterable[MessageStatusWrite]) -> dict[str, Any] | None:
    """A message as ``event-gateway state message`` prints it, or None without entries.

    ``entries`` are the stored statuses, each with the earliest event that reported it.
    History is oldest first (``writes.history_order``); the current status is the entry with
    the greatest version (``writes.current_status``): a final status, once there, stays.
    """
    history = sorted(entries, key=history_order)
    current = current_status(history)
    if current is None:
        return None
    return {
        "id": message_id,
        "notification_type": current.notification_type,
        "status": current.status,
        "status_time": rfc3339(current.version.time),
        "history": [
            {
                "status": entry.status,
                "time": rfc3339(entry.version.time),
                "event_id": entry.version.event_id,
            }
            for entry in history
        ],
    }


def inbound_json(
    *,
    message_id: str,
    source_number: str | None,
    destination_number: str | None,
    received_time: datetime | None,
) -> dict[str, Any]:
    """An inbound SMS as ``event-gateway state inbound`` prints it (never its text)."""
    return {
        "id": message_id,
        "source_number": source_number,
        "destination_number": destination_number,
        "received_time": _time(received_time),
    }
