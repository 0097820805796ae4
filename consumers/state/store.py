"""What a state store is, when an event wins, and how stored rows look as JSON (contract §5).

Everything here is pure: the backends (``sql.py``, driven by ``sqlite.py`` or ``postgres.py``)
run the same rule in SQL and hand their rows to the shaping functions below.

The rule. Each field group (a device's roaming group, a device's reachability group, a
subscription, one status of a message) remembers the ``(time, event_id)`` of the event that
last set it. A new event changes the group iff its ``(time, event_id)`` is greater. That is a
total order, so duplicates and any delivery order (also from several writers at once) end in
the same state: the one the greatest event produced.

Errors:

- ``StateStoreError``: base of the errors below.
- ``InvalidStateURL``: the state URL is malformed or names an unsupported backend (a
  configuration error, also a ``ValueError``).
- ``StateStoreUnavailable``: the database could not be opened or reached.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import orjson

from gateway.cloudevent import rfc3339

if TYPE_CHECKING:
    from consumers.state.writes import Write

REACHABILITY_VALUES = frozenset({"DATA", "SMS", "DISCONNECTED"})
SUBSCRIPTION_STATUSES = frozenset({"ACTIVE", "INACTIVE", "ENDED"})


class StateStoreError(Exception):
    """Base class of the state store's errors."""


class InvalidStateURL(StateStoreError, ValueError):
    """The state URL is malformed or names an unsupported backend."""


class StateStoreUnavailable(StateStoreError):
    """The database could not be opened or reached."""


class StateStore(Protocol):
    """Durable state the built-in workers keep; every write has committed when it returns.

    Each ``update_*``/``record_*`` returns whether it changed anything.
    """

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
        ...

    async def update_reachability(
        self, device: str, *, reachability: str, time: datetime, event_id: str
    ) -> bool:
        """Replace the device's reachability (DATA | SMS | DISCONNECTED) if this event wins."""
        ...

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
        """Replace the subscription (ACTIVE | INACTIVE | ENDED) if this event wins."""
        ...

    async def record_message_status(
        self, message_id: str, *, notification_type: str, status: str, time: datetime, event_id: str
    ) -> bool:
        """Add a status to the message's history, keeping the earliest event per status."""
        ...

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
        ...

    async def apply_writes(self, writes: Iterable[Write]) -> None:
        """Apply a batch of writes (``consumers.state.writes``), ending in the state that
        making each write alone, in any order, would give. Nothing is guaranteed about a
        batch that raised: some of its writes may have been applied (apply them again)."""
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


# --- the rule --------------------------------------------------------------------------------

Version = tuple[datetime, str]
"""``(time, event_id)`` of an event: the total order every write is judged by."""


def utc(moment: datetime) -> datetime:
    """The same instant in UTC; a naive datetime is a caller bug and raises ValueError."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment!r} has no time zone")
    return moment.astimezone(UTC)


def wins(new: Version, stored: Version | None) -> bool:
    """Whether an event with version ``new`` replaces a field group stored at ``stored``.

    The SQL in ``schema.py`` is this same comparison, done atomically in the database.
    """
    return stored is None or new > stored


def keeps_earlier(new: Version, stored: Version | None) -> bool:
    """Whether a history entry at ``new`` replaces the one at ``stored`` for the same status."""
    return stored is None or new < stored


def check_reachability(value: str) -> None:
    """Raise ValueError unless ``value`` is a reachability the contract names."""
    if value not in REACHABILITY_VALUES:
        raise ValueError(f"reachability must be one of {sorted(REACHABILITY_VALUES)}: {value!r}")


def check_subscription_status(value: str) -> None:
    """Raise ValueError unless ``value`` is a subscription status the contract names."""
    if value not in SUBSCRIPTION_STATUSES:
        raise ValueError(f"status must be one of {sorted(SUBSCRIPTION_STATUSES)}: {value!r}")


# --- rows -> JSON ----------------------------------------------------------------------------


def country_name_to_json(names: list[str] | None) -> str | None:
    """The stored form of ``country_name``: a JSON array as text, or None."""
    return None if names is None else orjson.dumps(names).decode()


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


class StatusEntry(NamedTuple):
    """One stored status of a message: the earliest event that reported it."""

    status: str
    notification_type: str
    time: datetime
    event_id: str


def message_json(message_id: str, entries: Iterable[StatusEntry]) -> dict[str, Any] | None:
    """A message as ``event-gateway state message`` prints it, or None without entries.

    History is oldest first by ``(time, event_id)``; the current status is the entry that
    wins by the same order, i.e. the last one.
    """
    history = sorted(entries, key=lambda entry: (entry.time, entry.event_id))
    if not history:
        return None
    current = history[-1]
    return {
        "id": message_id,
        "notification_type": current.notification_type,
        "status": current.status,
        "status_time": rfc3339(current.time),
        "history": [
            {"status": entry.status, "time": rfc3339(entry.time), "event_id": entry.event_id}
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
