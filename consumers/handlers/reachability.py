"""Built-in planner for the ``reachability`` queue: a device's reachability, and subscriptions.

The state is in the type only (the events carry no field for it):
``reachability-data|sms|disconnected`` and the legacy ``connectivity-data|sms|disconnected``
-> ``DATA`` | ``SMS`` | ``DISCONNECTED``. Lifecycle events go to the subscription.
"""

from __future__ import annotations

from typing import Final

from consumers.event import Event
from consumers.handlers.camara import (
    LIFECYCLE,
    event_name,
    ignore,
    plan_lifecycle,
    require_device,
    version,
)
from consumers.state import StateStore
from consumers.state.writes import ReachabilityWrite, Write
from consumers.worker import Handler, applying

REACHABILITY: Final[dict[str, str]] = {
    f"{prefix}-{state}": state.upper()
    for prefix in ("reachability", "connectivity")
    for state in ("data", "sms", "disconnected")
}


def plan(event: Event) -> list[Write]:
    """The writes of one event on the reachability queue."""
    name = event_name(event.type)
    if name in LIFECYCLE:
        return plan_lifecycle(event)
    value = REACHABILITY.get(name)
    if value is None:
        return ignore(event, "reachability")
    return [ReachabilityWrite(require_device(event), value, version(event))]


def make_handler(store: StateStore) -> Handler:
    """``plan`` applied to ``store`` one event at a time (a custom handler can reuse it)."""
    return applying(store, plan)
