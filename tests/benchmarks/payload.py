"""The benchmark's request body and credential: one ~700-byte CAMARA roaming CloudEvent.

Built from ``tests/fixtures/camara-roaming-status.json`` and padded with fields a real
network sends (every device identifier the v0.7 ``Device`` allows, the country, a W3C
``traceparent``), so the gateway parses and publishes a body of realistic size.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "camara-roaming-status.json"


def roaming_event() -> dict[str, Any]:
    """The fixture event with realistic padding: 690 bytes as compact JSON."""
    event: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
    event["id"] = "5f1c9e2a-7d43-4b8e-9a61-0c2f7e5d8b13"
    event["data"]["device"] = {
        "phoneNumber": "+36721601234567",
        "networkAccessIdentifier": "36721601234567@domain.supertelco.com",
        "ipv4Address": {"publicAddress": "84.125.93.10", "publicPort": 59765},
        "ipv6Address": "2001:db8:85a3:8d3:1319:8a2e:370:7344",
    }
    event["data"]["countryCode"] = 208
    event["data"]["countryName"] = ["FR"]
    event["data"]["subscriptionId"] = "qs15-h556-rt89-1298-7f3a2c19d4e8"
    event["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    return event


def encode(event: dict[str, Any]) -> bytes:
    """Compact JSON, as a network's notification server sends it."""
    return json.dumps(event, separators=(",", ":")).encode()


def body() -> bytes:
    """The request body every benchmark sends or publishes."""
    return encode(roaming_event())


def new_token() -> str:
    """A fresh bearer token for one benchmark run."""
    return secrets.token_urlsafe(32)


def digest(token: str) -> str:
    """The token as the gateway stores it: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()
