"""The ``partitionkey`` extension: which entity (device, QoD session, assignment) an event is about.

Order: ``data.device.phoneNumber``, ``networkAccessIdentifier``, ``ipv6Address``, the IPv4
device key; else ``data.sessionId`` (Quality on Demand). qos-provisioning events
(``…qos-provisioning.vN.*``) are about their ``data.assignmentId``.

Device keys (contract §5), the same in the ingress and the workers:

* a phone number in E.164 with its ``+``: ``36721601234567`` (Network as Code writes it so)
  and the JSON number ``36721601234567`` both key ``+36721601234567``; a number that is not
  E.164 without its ``+`` (``07700912345``) is kept as written;
* an IPv4 device: ``ipv4:<publicAddress>/<privateAddress>``, else
  ``ipv4:<publicAddress>:<publicPort>``. A public address alone names no device (many sit
  behind one carrier-grade NAT), so it gives no key.

This module imports nothing but the CloudEvent type: the workers use it too.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.cloudevent import CloudEvent

_E164_WITHOUT_PLUS = re.compile(r"[1-9][0-9]{4,14}")
_DEVICE_KEYS = ("networkAccessIdentifier", "ipv6Address")
_MAX_PORT = 65535
QOS_PROVISIONING = ".qos-provisioning."


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def phone_key(value: Any) -> str | None:
    """A phone number in E.164 with its ``+`` (string or JSON number), else as written."""
    if type(value) is int and value > 0:
        value = str(value)
    text = _text(value)
    if text is not None and text[0] != "+" and _E164_WITHOUT_PLUS.fullmatch(text):
        return "+" + text
    return text


def ipv4_key(ipv4: Any) -> str | None:
    """``ipv4:<public>/<private>`` or ``ipv4:<public>:<port>``; None for a public address alone."""
    if not isinstance(ipv4, dict):
        return None
    public = _text(ipv4.get("publicAddress"))
    if public is None:
        return None
    private = _text(ipv4.get("privateAddress"))
    if private is not None:
        return f"ipv4:{public}/{private}"
    port = ipv4.get("publicPort")
    if type(port) is int and 0 <= port <= _MAX_PORT:
        return f"ipv4:{public}:{port}"
    return None


def device_key(device: Any) -> str | None:
    """The key of a CAMARA ``Device`` object, or None when it names no device."""
    if not isinstance(device, dict):
        return None
    phone = phone_key(device.get("phoneNumber"))
    if phone is not None:
        return phone
    for name in _DEVICE_KEYS:
        key = _text(device.get(name))
        if key is not None:
            return key
    return ipv4_key(device.get("ipv4Address"))


def partition_key(data: Any, event_type: str = "") -> str | None:
    """The entity a CAMARA event's ``data`` is about: its device, else its QoD session;
    for a qos-provisioning event its assignment."""
    if not isinstance(data, dict):
        return None
    if QOS_PROVISIONING in event_type:
        return _text(data.get("assignmentId"))
    key = device_key(data.get("device"))
    if key is None:
        key = _text(data.get("sessionId"))
    return key


def add_partition_key(event: CloudEvent) -> None:
    """Set ``partitionkey`` from ``data`` unless the event already carries one."""
    if "partitionkey" not in event:
        event_type = event.get("type")
        key = partition_key(event.get("data"), event_type if isinstance(event_type, str) else "")
        if key is not None:
            event["partitionkey"] = key
