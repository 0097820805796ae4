"""What the CAMARA handlers share: reading a device event, and subscription lifecycle events.

Type strings differ per API generation (``org.camaraproject.device-status.v0.roaming-on``,
``...roaming-status-subscriptions.v0.roaming-on``, ``...device-roaming-status-subscriptions
.v0.roaming-on``), so handlers route on the last dotted segment, the event name.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from consumers.event import Event, Unprocessable
from consumers.state import StateStore
from gateway.logs import get_logger

_VERSION = re.compile(r"v\d+")
LIFECYCLE = frozenset(
    {"subscription-started", "subscription-updated", "subscription-ended", "subscription-ends"}
)
_UPDATE_STATUS = {"SUBSCRIPTION_ACTIVE": "ACTIVE", "SUBSCRIPTION_INACTIVE": "INACTIVE"}

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
    """The ``partitionkey``, else the first identifier of ``data.device``: phone number,
    network access identifier, IPv6 address, public IPv4 address."""
    if event.partitionkey:
        return event.partitionkey
    data = event.data if isinstance(event.data, dict) else {}
    device = data.get("device")
    if not isinstance(device, dict):
        return None
    for name in ("phoneNumber", "networkAccessIdentifier", "ipv6Address"):
        value = device.get(name)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return str(value)
    ipv4 = device.get("ipv4Address")
    if isinstance(ipv4, dict) and isinstance(ipv4.get("publicAddress"), str):
        return str(ipv4["publicAddress"]) or None
    return None


def require_device(event: Event) -> str:
    key = device_key(event)
    if key is None:
        raise Unprocessable(f"{event.type} names no device (no partitionkey, no data.device)")
    return key


def event_time(event: Event) -> datetime:
    """``time``, else ``gatewayreceived``; Unprocessable without either."""
    moment = event.effective_time
    if moment is None:
        raise Unprocessable("event has neither 'time' nor 'gatewayreceived'")
    return moment


def optional_str(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Unprocessable(f"data.{name} must be a string")
    return value


async def apply_lifecycle(store: StateStore, event: Event) -> None:
    """``subscription-started|updated|ended|ends`` -> the subscription's status."""
    name = event_name(event.type)
    data = data_of(event)
    subscription_id = optional_str(data, "subscriptionId") or _legacy_subscription_id(event)
    if not subscription_id:
        raise Unprocessable(f"{event.type} has no data.subscriptionId")
    termination_reason: str | None = None
    if name == "subscription-started":
        status = "ACTIVE"
    elif name == "subscription-updated":
        reason = optional_str(data, "updateReason")
        if reason not in _UPDATE_STATUS:
            raise Unprocessable(f"data.updateReason {reason!r} is not one this worker knows")
        status = _UPDATE_STATUS[reason]
    else:
        status = "ENDED"
        value = data.get("terminationReason")
        termination_reason = None if value is None else str(value)
    changed = await store.update_subscription(
        subscription_id,
        api=api_name(event.type),
        status=status,
        termination_reason=termination_reason,
        time=event_time(event),
        event_id=event.id,
    )
    log.debug("subscription", status=status, changed=changed)


def _legacy_subscription_id(event: Event) -> str | None:
    value = event.extensions.get("eventSubscriptionId")
    return value if isinstance(value, str) else None


def ignore(event: Event, queue: str) -> None:
    """Log that an event has nothing to do on this queue; the worker acks it."""
    log.info("event type has no handler on this queue; acknowledged without change", handler=queue)
