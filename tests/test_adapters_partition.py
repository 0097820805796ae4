"""Partition keys: which device or QoD session a CAMARA event is about."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.adapters.partition import add_partition_key, partition_key


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"device": {"phoneNumber": "+123456789"}}, "+123456789"),
        (
            {
                "device": {
                    "phoneNumber": "+123456789",
                    "networkAccessIdentifier": "123456789@domain.com",
                    "ipv6Address": "2001:db8::1",
                }
            },
            "+123456789",
        ),
        (
            {"device": {"networkAccessIdentifier": "123@domain.com", "ipv6Address": "::1"}},
            "123@domain.com",
        ),
        (
            {"device": {"ipv6Address": "2001:db8::1", "ipv4Address": {"publicAddress": "1.2.3.4"}}},
            "2001:db8::1",
        ),
        (
            {"device": {"ipv4Address": {"publicAddress": "84.125.93.10", "publicPort": 59765}}},
            "ipv4:84.125.93.10:59765",
        ),
        (
            {
                "device": {
                    "ipv4Address": {
                        "publicAddress": "84.125.93.10",
                        "privateAddress": "10.0.0.7",
                        "publicPort": 59765,
                    }
                }
            },
            "ipv4:84.125.93.10/10.0.0.7",
        ),
        (
            {"device": {"ipv4Address": {"publicAddress": "84.125.93.10", "publicPort": 0}}},
            "ipv4:84.125.93.10:0",
        ),
        ({"device": {"phoneNumber": 36701234567}}, "+36701234567"),
        (
            {"sessionId": "3fa85f64-5717-4562-b3fc-2c963f66afa6"},
            "3fa85f64-5717-4562-b3fc-2c963f66afa6",
        ),
        ({"device": {"phoneNumber": ""}, "sessionId": "s-1"}, "s-1"),
        ({"device": {"phoneNumber": "36701234567"}}, "+36701234567"),
        ({"device": {"phoneNumber": "07700912345"}}, "07700912345"),
        ({"device": {"phoneNumber": "123"}}, "123"),
    ],
)
def test_key_order_phone_nai_ipv6_ipv4_session(data: dict[str, Any], key: str) -> None:
    """The first identifier present wins, in the contract's order."""
    assert partition_key(data) == key


@pytest.mark.parametrize(
    "data",
    [
        None,
        "text",
        [],
        {},
        {"device": "+123456789"},
        {"device": {"phoneNumber": True}},
        {"device": {"ipv4Address": "1.2.3.4"}},
        {"device": {"ipv4Address": {"publicAddress": "1.2.3.4"}}},
        {"device": {"ipv4Address": {"publicAddress": "1.2.3.4", "publicPort": 70000}}},
        {"device": {"ipv4Address": {"publicAddress": "1.2.3.4", "publicPort": "80"}}},
        {"sessionId": 5},
        {"subscriptionId": "sub-1"},
    ],
)
def test_no_entity_no_key(data: Any) -> None:
    """Data that names no device or session gives no key (a public IPv4 address alone
    names no device: many share it behind carrier-grade NAT)."""
    assert partition_key(data) is None


def test_qos_provisioning_is_keyed_by_assignment() -> None:
    """A qos-provisioning event is about its assignmentId, even when data has a device."""
    data = {"assignmentId": "a-1", "status": "AVAILABLE", "device": {"phoneNumber": "+1234567"}}
    assert partition_key(data, "org.camaraproject.qos-provisioning.v0.status-changed") == "a-1"
    assert partition_key({"status": "X"}, "org.camaraproject.qos-provisioning.v0.x") is None


def test_existing_key_is_kept() -> None:
    """An event that carries partitionkey keeps it."""
    event = {"partitionkey": "mine", "data": {"device": {"phoneNumber": "+123456789"}}}
    add_partition_key(event)
    assert event["partitionkey"] == "mine"


def test_no_key_is_not_written_as_none() -> None:
    """An event without an entity gets no partitionkey member at all."""
    event: dict[str, Any] = {"data": {"x": 1}}
    add_partition_key(event)
    assert "partitionkey" not in event
