"""Order independence through the real store, per entity kind (SQLite and PostgreSQL).

Hypothesis generates sets of events with ties in time, the same id from two sources and
meaningful conflicts; each set is delivered with duplicates, in a generated order and
batching, twice over (two orders). Both deliveries must end in the same state, and that
state must be the one the precedence table (contract §5, restated below as ``expected_*``)
gives, computed without the planners or the store.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.event import Event
from consumers.handlers import reachability, roaming, sms
from consumers.state import StateStore
from consumers.state.precedence import FINAL_MESSAGE_STATUSES
from consumers.state.writes import Write
from gateway.cloudevent import rfc3339
from tests.state_fixtures import (  # noqa: F401 - pytest fixtures, registered by import
    pg_admin_fixture,
    pg_url_fixture,
    state_url_fixture,
    store_fixture,
)

T0 = datetime(2024, 3, 5, 15, 0, 23, tzinfo=UTC)
SOURCES = ("/callbacks/a", "/callbacks/b")
_examples = itertools.count()
PROPERTY_SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass(frozen=True)
class Spec:
    """One generated event before it is given its entity keys: ``name`` says what it is."""

    name: str
    second: int  # T0 + seconds: few values, so ties in time are common
    source: str
    event_id: str
    value: Any = None

    @property
    def time(self) -> datetime:
        return T0 + timedelta(seconds=self.second)

    @property
    def identity(self) -> tuple[str, str]:
        return (self.source, self.event_id)


def spec_sets(names: st.SearchStrategy[str], values: st.SearchStrategy[Any]) -> Any:
    """Distinct events: at most one per (source, id), ids shared across sources."""

    @st.composite
    def build(draw: st.DrawFn) -> list[Spec]:
        specs = draw(
            st.lists(
                st.builds(
                    Spec,
                    names,
                    st.integers(0, 2),
                    st.sampled_from(SOURCES),
                    st.sampled_from(("e1", "e2", "e3", "e4", "e5")),
                    values,
                ),
                min_size=1,
                max_size=8,
                unique_by=lambda spec: spec.identity,
            )
        )
        return specs

    return build()


@st.composite
def deliveries(draw: st.DrawFn, specs: list[Spec]) -> list[list[Spec]]:
    """``specs`` with duplicates, in a drawn order, cut into drawn batches."""
    again = draw(st.lists(st.sampled_from(specs), max_size=4))
    order = draw(st.permutations(specs + again))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(order) - 1)), max_size=3)))
    bounds = [0, *cuts, len(order)]
    return [order[a:b] for a, b in itertools.pairwise(bounds) if a < b]


async def deliver(
    store: StateStore,
    plan: Callable[[Event], Sequence[Write]],
    batches: list[list[Spec]],
    make: Callable[[Spec, str], dict[str, Any]],
    key: str,
) -> None:
    """Plan every event of each batch (``make(spec, key)``) and apply the batch at once, as a
    worker does."""
    for batch in batches:
        writes = [w for spec in batch for w in plan(Event.from_dict(make(spec, key)))]
        await store.apply_writes(writes)


def camara(spec: Spec, event_type: str, key: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": spec.event_id,
        "source": spec.source,
        "type": event_type,
        "specversion": "1.0",
        "time": rfc3339(spec.time),
        "partitionkey": key,
        "gatewaysource": "camara",
        "data": data,
    }


def _greatest(specs: list[Spec], key: Callable[[Spec], Any]) -> Spec:
    return max(specs, key=lambda spec: (key(spec), spec.identity))


# --- subscriptions ---------------------------------------------------------------------------

LIFECYCLE_RANK = {"subscription-started": 0, "subscription-updated": 1, "subscription-ended": 2}


def lifecycle_event(spec: Spec, key: str) -> dict[str, Any]:
    data: dict[str, Any] = {"subscriptionId": key}
    if spec.name == "subscription-updated":
        data["updateReason"] = spec.value
    if spec.name == "subscription-ended":
        data["terminationReason"] = "SUBSCRIPTION_EXPIRED"
    event_type = f"org.camaraproject.device-roaming-status-subscriptions.v0.{spec.name}"
    return camara(spec, event_type, "+36721601234567", data)


def expected_subscription(specs: list[Spec]) -> tuple[str, str]:
    """ENDED is final; else the latest, a tie going to the later meaning, then identity."""
    ended = [spec for spec in specs if spec.name == "subscription-ended"]
    if ended:
        return "ENDED", rfc3339(_greatest(ended, lambda spec: spec.time).time)
    last = _greatest(specs, lambda spec: (spec.time, LIFECYCLE_RANK[spec.name]))
    status = (
        "ACTIVE"
        if last.name == "subscription-started"
        else last.value.removeprefix("SUBSCRIPTION_")
    )
    return status, rfc3339(last.time)


@PROPERTY_SETTINGS
@given(data=st.data())
async def test_subscriptions_end_the_same_in_any_order(
    store: StateStore, data: st.DataObject
) -> None:
    """Subscription lifecycle events in any order and batching: the table's status."""
    specs = data.draw(
        spec_sets(
            st.sampled_from(sorted(LIFECYCLE_RANK)),
            st.sampled_from(("SUBSCRIPTION_ACTIVE", "SUBSCRIPTION_INACTIVE")),
        )
    )
    example = next(_examples)
    states = []
    for run in range(2):
        key = f"sub-{example}-{run}"
        await deliver(store, roaming.plan, data.draw(deliveries(specs)), lifecycle_event, key)
        found = await store.subscription(key)
        assert found is not None
        states.append((found["status"], found["status_time"]))
    assert states[0] == states[1] == expected_subscription(specs)


# --- roaming and country ---------------------------------------------------------------------

COUNTRIES = ((208, ["FR"]), (214, ["ES"]), (262, ["DE"]))


def roaming_event(spec: Spec, key: str) -> dict[str, Any]:
    data: dict[str, Any] = {"subscriptionId": "s", "device": {"phoneNumber": "+3670"}}
    code, names = COUNTRIES[spec.value]
    if spec.name == "roaming-status-abroad":
        data |= {"roaming": True, "countryCode": code, "countryName": names}
    elif spec.name == "roaming-status-home":
        data |= {"roaming": False}
    elif spec.name == "roaming-change-country":
        data |= {"countryCode": code, "countryName": names}
    name = spec.name.removesuffix("-abroad").removesuffix("-home")
    return camara(
        spec, f"org.camaraproject.device-roaming-status-subscriptions.v1.{name}", key, data
    )


ROAMING_VALUE = {
    "roaming-status-abroad": True,
    "roaming-status-home": False,
    "roaming-on": True,
    "roaming-off": False,
    "roaming-change-country": True,
}
CARRIES_COUNTRY = {"roaming-status-abroad", "roaming-change-country"}


def expected_device(specs: list[Spec]) -> tuple[Any, ...]:
    """Roaming: the latest event. Country: the latest, a carried one beating "unknown"."""
    last = _greatest(specs, lambda spec: spec.time)
    where = _greatest(specs, lambda spec: (spec.time, spec.name in CARRIES_COUNTRY))
    code, names = COUNTRIES[where.value] if where.name in CARRIES_COUNTRY else (None, None)
    return ROAMING_VALUE[last.name], rfc3339(last.time), code, names


@PROPERTY_SETTINGS
@given(data=st.data())
async def test_roaming_and_country_end_the_same_in_any_order(
    store: StateStore, data: st.DataObject
) -> None:
    """Roaming events of every kind in any order and batching: the table's device."""
    specs = data.draw(spec_sets(st.sampled_from(sorted(ROAMING_VALUE)), st.integers(0, 2)))
    example = next(_examples)
    states = []
    for run in range(2):
        key = f"dev-{example}-{run}"
        await deliver(store, roaming.plan, data.draw(deliveries(specs)), roaming_event, key)
        found = await store.device(key)
        assert found is not None
        states.append(
            (found["roaming"], found["roaming_time"], found["country_code"], found["country_name"])
        )
    assert states[0] == states[1] == expected_device(specs)


# --- reachability ----------------------------------------------------------------------------


def reachability_event(spec: Spec, key: str) -> dict[str, Any]:
    event_type = f"org.camaraproject.device-reachability-status-subscriptions.v0.{spec.name}"
    return camara(spec, event_type, key, {"subscriptionId": "s"})


@PROPERTY_SETTINGS
@given(data=st.data())
async def test_reachability_ends_the_same_in_any_order(
    store: StateStore, data: st.DataObject
) -> None:
    """Reachability events in any order and batching: the latest, ties by (source, id)."""
    names = st.sampled_from(("reachability-data", "reachability-sms", "reachability-disconnected"))
    specs = data.draw(spec_sets(names, st.none()))
    example = next(_examples)
    states = []
    for run in range(2):
        key = f"reach-{example}-{run}"
        await deliver(
            store,
            reachability.plan,
            data.draw(deliveries(specs)),
            reachability_event,
            key,
        )
        found = await store.device(key)
        assert found is not None
        states.append((found["reachability"], found["reachability_time"]))
    last = _greatest(specs, lambda spec: spec.time)
    assert states[0] == states[1] == (last.name.rpartition("-")[2].upper(), rfc3339(last.time))


# --- Notify messages -------------------------------------------------------------------------

STATUSES = ("created", "sending", "pending", "delivered", "permanent-failure", "temporary-failure")


def receipt(spec: Spec, key: str) -> dict[str, Any]:
    """A receipt whose status time is ``spec.time``: completed_at, or (null) sent_at."""
    moment = rfc3339(spec.time)
    completed = spec.value and spec.name in FINAL_MESSAGE_STATUSES
    return {
        "id": f"{key}:{spec.name}:{spec.event_id}",
        "source": spec.source,
        "type": "notify.sms.delivery-status",
        "specversion": "1.0",
        "time": moment,
        "gatewaysource": "notify-status",
        "data": {
            "id": key,
            "status": spec.name,
            "notification_type": "sms",
            "created_at": rfc3339(T0),
            "completed_at": moment if completed else None,
            "sent_at": None if completed else moment,
        },
    }


def expected_message(specs: list[Spec], key: str) -> tuple[Any, ...]:
    """Current: a final status over any non-final one, then the latest. History: each status
    once, at its earliest report."""

    def identity(spec: Spec) -> tuple[str, str]:
        return (spec.source, f"{key}:{spec.name}:{spec.event_id}")

    def first(name: str) -> Spec:
        return min((s for s in specs if s.name == name), key=lambda s: (s.time, identity(s)))

    earliest = [first(name) for name in {spec.name for spec in specs}]
    current = max(earliest, key=lambda s: (s.name in FINAL_MESSAGE_STATUSES, s.time, identity(s)))
    history = sorted(
        earliest, key=lambda s: (s.time, s.name in FINAL_MESSAGE_STATUSES, identity(s))
    )
    return current.name, rfc3339(current.time), [(s.name, rfc3339(s.time)) for s in history]


@PROPERTY_SETTINGS
@given(data=st.data())
async def test_messages_end_the_same_in_any_order(store: StateStore, data: st.DataObject) -> None:
    """Notify receipts in any order and batching: the table's status and history."""
    specs = data.draw(spec_sets(st.sampled_from(STATUSES), st.booleans()))
    example = next(_examples)
    states = []
    for run in range(2):
        key = f"msg-{example}-{run}"
        await deliver(store, sms.plan, data.draw(deliveries(specs)), receipt, key)
        found = await store.message(key)
        assert found is not None
        history = [(entry["status"], entry["time"]) for entry in found["history"]]
        states.append((found["status"], found["status_time"], history))
        assert states[-1] == expected_message(specs, key)
    assert states[0] == states[1]


# --- inbound SMS -----------------------------------------------------------------------------


def inbound(spec: Spec, key: str) -> dict[str, Any]:
    return {
        "id": key,
        "source": spec.source,
        "type": "notify.sms.inbound",
        "specversion": "1.0",
        "time": rfc3339(spec.time),
        "gatewaysource": "notify-inbound",
        "data": {
            "id": key,
            "source_number": f"+6141298765{SOURCES.index(spec.source)}",
            "destination_number": "+61412345678",
            "message": "hello",
            "date_received": rfc3339(spec.time),
        },
    }


@PROPERTY_SETTINGS
@given(data=st.data())
async def test_inbound_ends_the_same_in_any_order(store: StateStore, data: st.DataObject) -> None:
    """The same inbound SMS id from several sources: one kept, whatever the order."""
    specs = data.draw(spec_sets(st.just("inbound"), st.none()))
    # One Notify message id is one callback per source: keep one spec per source.
    specs = list({spec.source: spec for spec in specs}.values())
    example = next(_examples)
    states = []
    for run in range(2):
        key = f"in-{example}-{run}"
        await deliver(store, sms.plan, data.draw(deliveries(specs)), inbound, key)
        found = await store.inbound(key)
        assert found is not None
        states.append((found["source_number"], found["received_time"]))
    kept = max(specs, key=lambda spec: spec.source)
    number = f"+6141298765{SOURCES.index(kept.source)}"
    assert states[0] == states[1] == (number, rfc3339(kept.time))
