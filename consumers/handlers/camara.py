"""What the built-in planners share: reading an event, its version, and subscription lifecycle.

Planners build only writes the store takes (values from their own tables, aware times), so
they need no separate check; ``StateStore.apply_writes`` still refuses anything else.

Type strings differ per API generation and event version (``org.camaraproject.device-status
.v0.roaming-on``, ``...roaming-status-subscriptions.v0.roaming-on``, ``...device-roaming-
status-subscriptions.v1.roaming-on``), so planners route on the last dotted segment, the
event name.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from consumers.event import Event, Unprocessable
from consumers.state.precedence import (
    ORDINARY,
    SUBSCRIPTION_LIFECYCLE,
    UPDATE_REASONS,
)
from consumers.state.writes import SubscriptionWrite, Version, Write, utc
from gateway.adapters.partition import partition_key, phone_key
from gateway.logs import get_logger

_VERSION = re.compile(r"v\d+")
LIFECYCLE = frozenset(SUBSCRIPTION_LIFECYCLE)

log = get_logger("consumers.handlers")


def event_name(event_type: str) -> str:
    """The last dotted segment: ``...v0.roaming-on`` -> ``roaming-on``."""
    return event_type.rpartition(".")[2]


def api_name(event_type: str) -> str:
    """The CAMARA API named in a type: the segment before the ``vN`` event version
    (``org.camaraproject.device-roaming-status-subscriptions.v0.x`` ->
    ``device-roaming-status-subscriptions``); without a version, the second-to-last segment."""
    segments = event_type.split(".")
    for i in range(len(segments) - 2, 0, -1):
        if _VERSION.fullmatch(segments[i]):
            return segments[i - 1]
    return segments[-2] if len(segments) > 1 else event_type


def data_of(event: Event) -> dict[str, Any]:
    """The event's ``data`` object (empty when absent); Unprocessable when not an object."""
    if event.data is None:
        return {}
    if not isinstance(event.data, dict):
        raise Unprocessable(f"data of {event.type} must be a JSON object")
    return event.data


def device_key(event: Event) -> str | None:
    """The device key (contract §5): the ``partitionkey`` (a phone number in E.164 with its
    ``+``), else what ``data.device`` names (``gateway.adapters.partition``)."""
    if event.partitionkey:
        return phone_key(event.partitionkey)
    return partition_key(event.data, event.type)


def require_device(event: Event) -> str:
    key = device_key(event)
    if key is None:
        raise Unprocessable(f"{event.type} names no device (no partitionkey, no data.device)")
    return key


def event_time(event: Event) -> datetime:
    """``time``, else ``gatewayreceived``, in UTC; Unprocessable without either."""
    moment = event.effective_time
    if moment is None:
        raise Unprocessable("event has neither 'time' nor 'gatewayreceived'")
    return utc(moment)


def version(
    event: Event, *, tier: int = ORDINARY, rank: int = 0, time: datetime | None = None
) -> Version:
    """The version of the writes ``event`` implies (``consumers.state.precedence``)."""
    moment = event_time(event) if time is None else utc(time)
    return Version(tier, moment, rank, event.source, event.id)


def optional_str(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Unprocessable(f"data.{name} must be a string")
    return value


def plan_lifecycle(event: Event) -> list[Write]:
    """``subscription-started|updated|ended|ends`` -> the subscription's status."""
    rule = SUBSCRIPTION_LIFECYCLE[event_name(event.type)]
    data = data_of(event)
    subscription_id = optional_str(data, "subscriptionId") or _legacy_subscription_id(event)
    if not subscription_id:
        raise Unprocessable(f"{event.type} has no data.subscriptionId")
    status = rule.status
    termination_reason: str | None = None
    if status is None:
        reason = optional_str(data, "updateReason")
        if reason not in UPDATE_REASONS:
            raise Unprocessable(f"data.updateReason {reason!r} is not one this worker knows")
        status = UPDATE_REASONS[reason]
    elif status == "ENDED":
        value = data.get("terminationReason")
        termination_reason = None if value is None else str(value)
    write = SubscriptionWrite(
        subscription_id,
        api_name(event.type),
        status,
        termination_reason,
        version(event, tier=rule.tier, rank=rule.rank),
    )
    return [write]


def _legacy_subscription_id(event: Event) -> str | None:
    value = event.extensions.get("eventSubscriptionId")
    return value if isinstance(value, str) else None


def ignore(event: Event, queue: str) -> list[Write]:
    """Log that an event has nothing to do on this queue: no writes, the worker acks it."""
    log.info("event type has no handler on this queue; acknowledged without change", handler=queue)
    return []
