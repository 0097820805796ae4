"""Store writes as values: what an event changes, field group by field group, with its version.

A built-in handler is a pure function from an event to its writes
(``consumers.handlers``); ``StateStore.apply_writes`` applies a batch of them in one place.
Each write sets one field group of one entity and carries the ``Version`` it is judged by
(``consumers.state.precedence``): a group changes iff the offered version is greater than
the stored one. That is a total order, so duplicates and any delivery order, also from
several writers at once, end in the same state.

``reduce_writes`` is the pure half of applying: per key and field group it keeps only the
write that wins, so applying the reduced batch gives the state that applying each write alone,
in any order, would.

Exception: one message status keeps its *earliest* event (its time in the history); which
status is current is decided when reading (``current_status``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import NamedTuple, TypeVar

REACHABILITY_VALUES = frozenset({"DATA", "SMS", "DISCONNECTED"})
SUBSCRIPTION_STATUSES = frozenset({"ACTIVE", "INACTIVE", "ENDED"})


class Version(NamedTuple):
    """What a write is judged by, compared field by field (``precedence`` says why)."""

    tier: int
    time: datetime
    rank: int
    source: str
    event_id: str


class RoamingWrite(NamedTuple):
    device: str
    roaming: bool
    version: Version


class CountryWrite(NamedTuple):
    """``None`` for both: the event says the country changed but not to what."""

    device: str
    country_code: int | None
    country_name: tuple[str, ...] | None
    version: Version


class ReachabilityWrite(NamedTuple):
    device: str
    reachability: str
    version: Version


class SubscriptionWrite(NamedTuple):
    subscription_id: str
    api: str
    status: str
    termination_reason: str | None
    version: Version


class MessageStatusWrite(NamedTuple):
    message_id: str
    notification_type: str
    status: str
    version: Version


class InboundWrite(NamedTuple):
    message_id: str
    source_number: str | None
    destination_number: str | None
    message: str | None
    received_time: datetime | None
    version: Version


Write = (
    RoamingWrite
    | CountryWrite
    | ReachabilityWrite
    | SubscriptionWrite
    | MessageStatusWrite
    | InboundWrite
)


class DeviceRow(NamedTuple):
    """The winning write of each field group of one device (None: the batch has none)."""

    device: str
    roaming: RoamingWrite | None
    country: CountryWrite | None
    reachability: ReachabilityWrite | None


class ReducedWrites(NamedTuple):
    """The writes of a batch that can change anything, at most one per key (and group),
    sorted by key so concurrent writers lock rows in the same order."""

    devices: list[DeviceRow]
    subscriptions: list[SubscriptionWrite]
    message_statuses: list[MessageStatusWrite]
    inbound: list[InboundWrite]


def utc(moment: datetime) -> datetime:
    """The same instant in UTC; a naive datetime is a caller bug and raises ValueError."""
    if moment.tzinfo is UTC:
        return moment
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment!r} has no time zone")
    return moment.astimezone(UTC)


def check(write: Write) -> None:
    """Raise ValueError for a write the store would refuse (bad value, naive time)."""
    match write:
        case ReachabilityWrite():
            if write.reachability not in REACHABILITY_VALUES:
                raise ValueError(
                    f"reachability must be one of {sorted(REACHABILITY_VALUES)}: "
                    f"{write.reachability!r}"
                )
        case SubscriptionWrite():
            if write.status not in SUBSCRIPTION_STATUSES:
                raise ValueError(
                    f"status must be one of {sorted(SUBSCRIPTION_STATUSES)}: {write.status!r}"
                )
        case InboundWrite():
            if write.received_time is not None:
                _aware(write.received_time)
    _aware(write.version.time)


def _aware(moment: datetime) -> None:
    if moment.tzinfo is UTC:
        return
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment!r} has no time zone")


W = TypeVar("W", RoamingWrite, CountryWrite, ReachabilityWrite, SubscriptionWrite)


def _keep_greatest(kept: dict[str, W], key: str, write: W) -> None:
    stored = kept.get(key)
    if stored is None or write.version > stored.version:
        kept[key] = write


def _identity(write: InboundWrite) -> tuple[str, str]:
    return (write.version.source, write.version.event_id)


def reduce_writes(writes: Iterable[Write]) -> ReducedWrites:
    """Per key and field group the write with the greatest version (message statuses: the
    earliest per status; inbound SMS: the greatest ``(source, event_id)``). Equal versions
    are the same event: the first is kept."""
    roaming: dict[str, RoamingWrite] = {}
    country: dict[str, CountryWrite] = {}
    reachability: dict[str, ReachabilityWrite] = {}
    subscriptions: dict[str, SubscriptionWrite] = {}
    statuses: dict[tuple[str, str], MessageStatusWrite] = {}
    inbound: dict[str, InboundWrite] = {}
    for write in writes:
        match write:
            case RoamingWrite():
                _keep_greatest(roaming, write.device, write)
            case CountryWrite():
                _keep_greatest(country, write.device, write)
            case ReachabilityWrite():
                _keep_greatest(reachability, write.device, write)
            case SubscriptionWrite():
                _keep_greatest(subscriptions, write.subscription_id, write)
            case MessageStatusWrite():
                key = (write.message_id, write.status)
                kept = statuses.get(key)
                if kept is None or write.version < kept.version:
                    statuses[key] = write
            case InboundWrite():
                # One message id is one text: the greatest (source, id) keeps it, whatever
                # the times (the store's statement compares the same pair).
                kept_inbound = inbound.get(write.message_id)
                if kept_inbound is None or _identity(write) > _identity(kept_inbound):
                    inbound[write.message_id] = write
    devices = sorted({*roaming, *country, *reachability})
    return ReducedWrites(
        devices=[
            DeviceRow(key, roaming.get(key), country.get(key), reachability.get(key))
            for key in devices
        ],
        subscriptions=[subscriptions[key] for key in sorted(subscriptions)],
        message_statuses=[statuses[key] for key in sorted(statuses)],
        inbound=[inbound[key] for key in sorted(inbound)],
    )


def current_status(entries: Iterable[MessageStatusWrite]) -> MessageStatusWrite | None:
    """The status a message is in: the entry with the greatest version (a final status
    outranks any non-final one, whatever the times)."""
    return max(entries, key=lambda entry: entry.version, default=None)


def history_order(entry: MessageStatusWrite) -> tuple[datetime, int, int, str, str]:
    """Oldest first; at one time a non-final status before a final one."""
    version = entry.version
    return (version.time, version.tier, version.rank, version.source, version.event_id)
