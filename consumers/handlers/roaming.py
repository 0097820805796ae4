"""Built-in handler for the ``roaming`` queue: a device's roaming state, and subscriptions.

| event name               | roaming | country                                  |
|--------------------------|---------|------------------------------------------|
| ``roaming-status``       | data    | ``countryCode``/``countryName`` if given |
| ``roaming-on``           | True    | unknown (null)                           |
| ``roaming-off``          | False   | null                                     |
| ``roaming-change-country`` | True  | ``countryCode``/``countryName``          |

A legacy ``countryName`` string (device-status v0.5/v0.6) becomes a one-element list.
Lifecycle events go to the subscription (``camara.apply_lifecycle``).
"""

from __future__ import annotations

from typing import Any

from consumers.event import Event, Unprocessable
from consumers.handlers.camara import (
    LIFECYCLE,
    apply_lifecycle,
    data_of,
    event_name,
    event_time,
    ignore,
    require_device,
)
from consumers.state import StateStore
from consumers.worker import Handler

ROAMING_EVENTS = frozenset(
    {"roaming-status", "roaming-on", "roaming-off", "roaming-change-country"}
)


def make_handler(store: StateStore) -> Handler:
    """The roaming handler over ``store``."""

    async def handle(event: Event) -> None:
        name = event_name(event.type)
        if name in LIFECYCLE:
            await apply_lifecycle(store, event)
        elif name in ROAMING_EVENTS:
            await _apply_roaming(store, event, name)
        else:
            ignore(event, "roaming")

    return handle


async def _apply_roaming(store: StateStore, event: Event, name: str) -> None:
    data = data_of(event)
    device = require_device(event)
    roaming: bool | None
    country_code: int | None = None
    country_name: list[str] | None = None
    if name == "roaming-status":
        roaming = data.get("roaming")
        if roaming is not None and not isinstance(roaming, bool):
            raise Unprocessable("data.roaming must be true or false")
        country_code, country_name = _country(data)
    elif name == "roaming-on":
        roaming = True
    elif name == "roaming-off":
        roaming = False
    else:
        roaming = True
        country_code, country_name = _country(data)
    await store.update_roaming(
        device,
        roaming=roaming,
        country_code=country_code,
        country_name=country_name,
        time=event_time(event),
        event_id=event.id,
    )


def _country(data: dict[str, Any]) -> tuple[int | None, list[str] | None]:
    code = data.get("countryCode")
    if isinstance(code, str) and code.strip().isdigit():
        code = int(code)
    if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
        raise Unprocessable("data.countryCode must be an integer (MCC)")
    names = data.get("countryName")
    if isinstance(names, str):
        names = [names]
    if names is not None and (
        not isinstance(names, list) or not all(isinstance(n, str) for n in names)
    ):
        raise Unprocessable("data.countryName must be a list of country codes")
    return code, names
