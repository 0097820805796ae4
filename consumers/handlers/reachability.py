"""Built-in handler for the ``reachability`` queue: a device's reachability, and subscriptions.

The state is in the type only (the events carry no field for it):
``reachability-data|sms|disconnected`` and the legacy ``connectivity-data|sms|disconnected``
-> ``DATA`` | ``SMS`` | ``DISCONNECTED``. Lifecycle events go to the subscription.
"""

from __future__ import annotations

from consumers.event import Event
from consumers.handlers.camara import (
    LIFECYCLE,
    apply_lifecycle,
    event_name,
    event_time,
    ignore,
    require_device,
)
from consumers.state import StateStore
from consumers.worker import Handler

REACHABILITY = {
    f"{prefix}-{state}": state.upper()
    for prefix in ("reachability", "connectivity")
    for state in ("data", "sms", "disconnected")
}


def make_handler(store: StateStore) -> Handler:
    """The reachability handler over ``store``."""

    async def handle(event: Event) -> None:
        name = event_name(event.type)
        if name in LIFECYCLE:
            await apply_lifecycle(store, event)
        elif name in REACHABILITY:
            await store.update_reachability(
                require_device(event),
                reachability=REACHABILITY[name],
                time=event_time(event),
                event_id=event.id,
            )
        else:
            ignore(event, "reachability")

    return handle
