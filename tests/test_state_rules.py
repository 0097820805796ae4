"""The precedence table (contract §5), case by case, on the pure layer: planners + reduce.

Each case is a set of events and the state they must give; every case is checked in every
order of its events, so the outcome never depends on delivery order or opaque ids.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from consumers.event import Event
from consumers.handlers import reachability, roaming, sms
from consumers.state.writes import Write
from tests.state_fixtures import (
    DEVICE,
    REACHABILITY_API,
    camara_event,
    pure_state,
    receipt_event,
)

Planner = Callable[[Event], Sequence[Write]]
T1, T2, T3 = "2024-03-05T15:00:23Z", "2024-03-05T15:00:24Z", "2024-03-05T15:00:25Z"
T1_TEXT, T2_TEXT = "2024-03-05T15:00:23.000Z", "2024-03-05T15:00:24.000Z"


def state_in_every_order(plan: Planner, events: list[Event]) -> dict[str, dict[str, Any]]:
    """The state of ``events`` (each also delivered twice), the same in every order."""
    states = []
    for order in itertools.permutations(events):
        writes = [write for event in (*order, *order) for write in plan(event)]
        states.append(pure_state(writes))
    assert all(state == states[0] for state in states)
    return states[0]


def lifecycle(name: str, time: str, event_id: str, **data: Any) -> Event:
    return camara_event(name, time, event_id, data=data)


SUBSCRIPTION_CASES = [
    pytest.param(
        [
            lifecycle("subscription-started", T1, "z-start"),
            lifecycle("subscription-ended", T1, "a"),
        ],
        "ENDED",
        id="ended-wins-a-tie-in-time-whatever-the-ids",
    ),
    pytest.param(
        [
            lifecycle("subscription-ended", T1, "a", terminationReason="MAX_EVENTS_REACHED"),
            lifecycle("subscription-updated", T2, "b", updateReason="SUBSCRIPTION_ACTIVE"),
            lifecycle("subscription-started", T3, "c"),
        ],
        "ENDED",
        id="no-later-started-or-updated-revives-an-ended-one",
    ),
    pytest.param(
        [
            lifecycle("subscription-started", T1, "z"),
            lifecycle("subscription-updated", T1, "a", updateReason="SUBSCRIPTION_INACTIVE"),
        ],
        "INACTIVE",
        id="updated-follows-started-at-the-same-time",
    ),
    pytest.param(
        [
            lifecycle("subscription-updated", T1, "b", updateReason="SUBSCRIPTION_INACTIVE"),
            lifecycle("subscription-updated", T2, "a", updateReason="SUBSCRIPTION_ACTIVE"),
        ],
        "ACTIVE",
        id="later-update-wins",
    ),
    pytest.param(
        [lifecycle("subscription-ends", T1, "a"), lifecycle("subscription-started", T2, "b")],
        "ENDED",
        id="v0.7-subscription-ends-is-final-too",
    ),
]


@pytest.mark.parametrize(("events", "status"), SUBSCRIPTION_CASES)
def test_subscription_precedence(events: list[Event], status: str) -> None:
    """ENDED is final and wins ties; otherwise the later event, at a tie the later meaning."""
    state = state_in_every_order(roaming.plan, events)
    assert state["subscription"]["sub-1"]["status"] == status


def test_ended_keeps_its_reason_and_time() -> None:
    """The ENDED status carries the reason and time of its event, not of later ones."""
    events = [
        lifecycle("subscription-ended", T1, "a", terminationReason="ACCESS_TOKEN_EXPIRED"),
        lifecycle("subscription-updated", T2, "b", updateReason="SUBSCRIPTION_ACTIVE"),
    ]
    sub = state_in_every_order(roaming.plan, events)["subscription"]["sub-1"]
    assert (sub["termination_reason"], sub["status_time"]) == ("ACCESS_TOKEN_EXPIRED", T1_TEXT)


def test_a_v1_lifecycle_event_is_planned_like_v0() -> None:
    """A new event version (v1) is the same lifecycle event, its API named from the type."""
    event = camara_event("subscription-ended", T1, "a", event_version="v1")
    sub = pure_state(roaming.plan(event))["subscription"]["sub-1"]
    assert (sub["status"], sub["api"]) == ("ENDED", "device-roaming-status-subscriptions")


def roam(name: str, time: str, event_id: str, **data: Any) -> Event:
    return camara_event(name, time, event_id, data=data)


ROAMING_CASES = [
    pytest.param(
        [
            roam("roaming-status", T1, "a", roaming=True, countryCode=208, countryName=["FR"]),
            roam("roaming-on", T1, "z"),
        ],
        (True, 208, ["FR"]),
        id="roaming-on-keeps-the-country-of-the-same-move",
    ),
    pytest.param(
        [
            roam("roaming-status", T1, "z", roaming=True, countryCode=208, countryName=["FR"]),
            roam("roaming-on", T2, "a"),
        ],
        (True, None, None),
        id="a-later-roaming-on-clears-an-older-country",
    ),
    pytest.param(
        [
            roam("roaming-change-country", T2, "a", countryCode=214, countryName=["ES"]),
            roam("roaming-status", T1, "z", roaming=True, countryCode=208, countryName=["FR"]),
        ],
        (True, 214, ["ES"]),
        id="an-older-country-does-not-overwrite",
    ),
    pytest.param(
        [
            roam("roaming-change-country", T1, "a", countryCode=214, countryName=["ES"]),
            roam("roaming-status", T2, "b", roaming=False),
            roam("roaming-off", T2, "c"),
        ],
        (False, None, None),
        id="going-home-clears-the-country",
    ),
    pytest.param(
        [
            roam("roaming-off", T1, "a"),
            roam("roaming-change-country", T1, "b", countryCode=214, countryName=["ES"]),
            roam("roaming-on", T2, "c"),
            roam("roaming-status", T2, "d", roaming=True, countryCode=262, countryName=["DE"]),
        ],
        (True, 262, ["DE"]),
        id="groups-ordered-on-their-own",
    ),
    pytest.param(
        [roam("roaming-status", T1, "a", roaming=True, countryCode=208, countryName="FR")],
        (True, 208, ["FR"]),
        id="legacy-country-name-string",
    ),
]


@pytest.mark.parametrize(("events", "expected"), ROAMING_CASES)
def test_roaming_precedence(events: list[Event], expected: tuple[Any, ...]) -> None:
    """roaming-on/-off set roaming and keep a same-or-later country; groups order alone."""
    device = state_in_every_order(roaming.plan, events)["device"][DEVICE]
    assert (device["roaming"], device["country_code"], device["country_name"]) == expected


def reach(name: str, time: str, event_id: str, source: str = "/s", key: str = DEVICE) -> Event:
    return camara_event(name, time, event_id, api=REACHABILITY_API, source=source, key=key)


REACHABILITY_CASES = [
    pytest.param(
        [reach("reachability-data", T1, "z"), reach("reachability-disconnected", T2, "a")],
        "DISCONNECTED",
        id="later-wins-whatever-the-ids",
    ),
    pytest.param(
        [reach("reachability-sms", T1, "e", "/b"), reach("reachability-data", T1, "e", "/a")],
        "SMS",
        id="same-id-from-two-sources-is-two-events-decided-by-source",
    ),
    pytest.param(
        [reach("connectivity-data", T1, "a"), reach("reachability-sms", T2, "b")],
        "SMS",
        id="legacy-connectivity-and-current-types-mix",
    ),
]


@pytest.mark.parametrize(("events", "expected"), REACHABILITY_CASES)
def test_reachability_precedence(events: list[Event], expected: str) -> None:
    """The later event wins; (source, id) identity decides only exact ties."""
    device = state_in_every_order(reachability.plan, events)["device"][DEVICE]
    assert device["reachability"] == expected


def test_two_devices_behind_one_nat_are_two_devices() -> None:
    """IPv4 devices sharing a public address but not the private one keep separate state."""
    events = [
        reach("reachability-data", T1, "a", key="ipv4:84.125.93.10/10.0.0.1"),
        reach("reachability-disconnected", T2, "b", key="ipv4:84.125.93.10/10.0.0.2"),
    ]
    devices = state_in_every_order(reachability.plan, events)["device"]
    assert devices["ipv4:84.125.93.10/10.0.0.1"]["reachability"] == "DATA"
    assert devices["ipv4:84.125.93.10/10.0.0.2"]["reachability"] == "DISCONNECTED"


@pytest.mark.parametrize("phone", [36721601234567, "36721601234567", "+36721601234567"])
def test_phone_numbers_key_in_e164_with_plus(phone: Any) -> None:
    """A device named by a phone number without + (or as a number) is keyed with +."""
    event = camara_event(
        "reachability-sms",
        T1,
        "a",
        api=REACHABILITY_API,
        key=None,
        data={"device": {"phoneNumber": phone}},
    )
    assert list(pure_state(reachability.plan(event))["device"]) == ["+36721601234567"]


MESSAGE_CASES = [
    pytest.param(
        [
            receipt_event("sending", created_at=T1),
            receipt_event("delivered", created_at=T1),  # completed_at null, no sent_at
        ],
        ("delivered", T1_TEXT, ["sending", "delivered"]),
        id="final-wins-a-tie-when-completed-at-is-null",
    ),
    pytest.param(
        [
            receipt_event("delivered", created_at=T1, sent_at=T2),
            receipt_event("pending", created_at=T1, completed_at=T3),
        ],
        ("delivered", T2_TEXT, ["delivered", "pending"]),
        id="null-completed-at-uses-sent-at-and-final-is-never-undone",
    ),
    pytest.param(
        [receipt_event("created", created_at=T1), receipt_event("sending", created_at=T2)],
        ("sending", T2_TEXT, ["created", "sending"]),
        id="non-final-statuses-by-time",
    ),
    pytest.param(
        [
            receipt_event("temporary-failure", created_at=T1, completed_at=T1),
            receipt_event("delivered", created_at=T1, completed_at=T2),
        ],
        ("delivered", T2_TEXT, ["temporary-failure", "delivered"]),
        id="final-statuses-by-time",
    ),
]


@pytest.mark.parametrize(("events", "expected"), MESSAGE_CASES)
def test_message_precedence(events: list[Event], expected: tuple[Any, ...]) -> None:
    """A final status is never moved back; history records every status once."""
    message = state_in_every_order(sms.plan, events)["message"]["msg-1"]
    history = [entry["status"] for entry in message["history"]]
    assert (message["status"], message["status_time"], history) == expected
