"""Store writes as values, so a worker can apply a batch of them at once.

``WriteRecorder`` is a ``StateStore`` whose writes are recorded instead of run (it checks
them as the real store would); a built-in handler built over it turns an event into its
writes. ``StateStore.apply_writes`` then applies a batch of them; ``reduce_writes`` is the
pure part: it keeps, per key, only the write the rule in ``store.py`` lets win, so applying
the reduced batch gives the same state as applying every write one by one, in any order.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from consumers.state import store


class RoamingWrite(NamedTuple):
    device: str
    roaming: bool | None
    country_code: int | None
    country_name: list[str] | None
    time: datetime
    event_id: str


class ReachabilityWrite(NamedTuple):
    device: str
    reachability: str
    time: datetime
    event_id: str


class SubscriptionWrite(NamedTuple):
    subscription_id: str
    api: str
    status: str
    termination_reason: str | None
    time: datetime
    event_id: str


class MessageStatusWrite(NamedTuple):
    message_id: str
    notification_type: str
    status: str
    time: datetime
    event_id: str


class InboundWrite(NamedTuple):
    message_id: str
    source_number: str | None
    destination_number: str | None
    message: str | None
    received_time: datetime | None
    event_id: str


Write = RoamingWrite | ReachabilityWrite | SubscriptionWrite | MessageStatusWrite | InboundWrite


class ReducedWrites(NamedTuple):
    """The writes of a batch that can change anything, at most one per key, sorted by key
    (so concurrent writers lock rows in the same order)."""

    roaming: list[RoamingWrite]
    reachability: list[ReachabilityWrite]
    subscriptions: list[SubscriptionWrite]
    message_statuses: list[MessageStatusWrite]
    inbound: list[InboundWrite]


def check(write: Write) -> None:
    """Raise ValueError for a write the store would refuse (bad value, naive time)."""
    match write:
        case ReachabilityWrite():
            store.check_reachability(write.reachability)
        case SubscriptionWrite():
            store.check_subscription_status(write.status)
        case InboundWrite():
            if write.received_time is not None:
                store.utc(write.received_time)
            return
    store.utc(write.time)


def reduce_writes(writes: Iterable[Write]) -> ReducedWrites:
    """Per key the write that wins by ``store.wins`` (message statuses: the earliest one,
    ``store.keeps_earlier``; inbound SMS: the first). Equal versions keep the first write,
    as applying them one by one would."""
    roaming: dict[str, RoamingWrite] = {}
    reachability: dict[str, ReachabilityWrite] = {}
    subscriptions: dict[str, SubscriptionWrite] = {}
    statuses: dict[tuple[str, str], MessageStatusWrite] = {}
    inbound: dict[str, InboundWrite] = {}
    for write in writes:
        match write:
            case RoamingWrite():
                _keep_winner(roaming, write.device, write)
            case ReachabilityWrite():
                _keep_winner(reachability, write.device, write)
            case SubscriptionWrite():
                _keep_winner(subscriptions, write.subscription_id, write)
            case MessageStatusWrite():
                key = (write.message_id, write.status)
                kept = statuses.get(key)
                if kept is None or store.keeps_earlier(_version(write), _version(kept)):
                    statuses[key] = write
            case InboundWrite():
                inbound.setdefault(write.message_id, write)
    return ReducedWrites(
        roaming=[roaming[key] for key in sorted(roaming)],
        reachability=[reachability[key] for key in sorted(reachability)],
        subscriptions=[subscriptions[key] for key in sorted(subscriptions)],
        message_statuses=[statuses[key] for key in sorted(statuses)],
        inbound=[inbound[key] for key in sorted(inbound)],
    )


def _version(
    write: RoamingWrite | ReachabilityWrite | SubscriptionWrite | MessageStatusWrite,
) -> store.Version:
    return (write.time, write.event_id)


W = TypeVar("W", RoamingWrite, ReachabilityWrite, SubscriptionWrite)


def _keep_winner(kept: dict[str, W], key: str, write: W) -> None:
    stored = kept.get(key)
    if stored is None or store.wins(_version(write), _version(stored)):
        kept[key] = write


class WriteRecorder:
    """A ``StateStore`` that records its writes in ``writes`` (each checked, each reported as
    a change) and reads from ``reader``."""

    def __init__(self, reader: store.StateStore) -> None:
        self.reader = reader
        self.writes: list[Write] = []

    def _record(self, write: Write) -> bool:
        check(write)
        self.writes.append(write)
        return True

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
        names = None if country_name is None else list(country_name)
        return self._record(RoamingWrite(device, roaming, country_code, names, time, event_id))

    async def update_reachability(
        self, device: str, *, reachability: str, time: datetime, event_id: str
    ) -> bool:
        return self._record(ReachabilityWrite(device, reachability, time, event_id))

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
        return self._record(
            SubscriptionWrite(subscription_id, api, status, termination_reason, time, event_id)
        )

    async def record_message_status(
        self, message_id: str, *, notification_type: str, status: str, time: datetime, event_id: str
    ) -> bool:
        return self._record(
            MessageStatusWrite(message_id, notification_type, status, time, event_id)
        )

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
        return self._record(
            InboundWrite(
                message_id, source_number, destination_number, message, received_time, event_id
            )
        )

    async def apply_writes(self, writes: Iterable[Write]) -> None:
        for write in writes:
            self._record(write)

    async def device(self, key: str) -> dict[str, Any] | None:
        return await self.reader.device(key)

    async def subscription(self, subscription_id: str) -> dict[str, Any] | None:
        return await self.reader.subscription(subscription_id)

    async def message(self, message_id: str) -> dict[str, Any] | None:
        return await self.reader.message(message_id)

    async def inbound(self, message_id: str) -> dict[str, Any] | None:
        return await self.reader.inbound(message_id)

    async def close(self) -> None:
        """Nothing to release: the reader belongs to the caller."""
