"""The ``partitionkey`` extension: which entity (device or QoD session) an event is about.

Order: ``data.device.phoneNumber``, ``networkAccessIdentifier``, ``ipv6Address``,
``ipv4Address.publicAddress``; else ``data.sessionId`` (Quality on Demand). A phone number
written without its ``+`` (Network as Code samples do) is keyed in E.164 form, so one device
has one key whichever sender wrote the event.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.cloudevent import CloudEvent

_E164_WITHOUT_PLUS = re.compile(r"[1-9][0-9]{4,14}")
_DEVICE_KEYS = ("networkAccessIdentifier", "ipv6Address")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def device_key(device: Any) -> str | None:
    """The key of a CAMARA ``Device`` object, or None when it names no device."""
    if not isinstance(device, dict):
        return None
    phone = _text(device.get("phoneNumber"))
    if phone is not None:
        if phone[0] != "+" and _E164_WITHOUT_PLUS.fullmatch(phone):
            return "+" + phone
        return phone
    for name in _DEVICE_KEYS:
        key = _text(device.get(name))
        if key is not None:
            return key
    ipv4 = device.get("ipv4Address")
    if isinstance(ipv4, dict):
        return _text(ipv4.get("publicAddress"))
    return None


def partition_key(data: Any) -> str | None:
    """The entity a CAMARA event's ``data`` is about: its device, else its QoD session."""
    if not isinstance(data, dict):
        return None
    key = device_key(data.get("device"))
    if key is None:
        key = _text(data.get("sessionId"))
    return key


def add_partition_key(event: CloudEvent) -> None:
    """Set ``partitionkey`` from ``data`` unless the event already carries one."""
    if "partitionkey" not in event:
        key = partition_key(event.get("data"))
        if key is not None:
            event["partitionkey"] = key
