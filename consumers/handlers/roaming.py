"""Built-in planner for the ``roaming`` queue: a device's roaming and country, and subscriptions.

Roaming and country are two field groups, each ordered on its own (contract §5):

| event name                 | roaming          | country                               |
|----------------------------|------------------|---------------------------------------|
| ``roaming-status``         | ``data.roaming`` | its country if it carries one, else unknown |
| ``roaming-on``             | true             | unknown                               |
| ``roaming-off``            | false            | unknown                               |
| ``roaming-change-country`` | true             | its country                           |

"Unknown" (null) ranks below a carried country at the same time: a Germany -> France move
sends ``roaming-status`` (France) and ``roaming-on`` for the same instant, and the country
stays France whichever is applied last; a later ``roaming-on`` or ``-off`` clears an
earlier country. A legacy ``countryName`` string (device-status v0.5/v0.6) becomes a
one-element list. Lifecycle events go to the subscription (``camara.plan_lifecycle``).
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple

from consumers.event import Event, Unprocessable
from consumers.handlers.camara import (
    LIFECYCLE,
    data_of,
    event_name,
    ignore,
    plan_lifecycle,
    require_device,
    version,
)
from consumers.state import StateStore
from consumers.state.precedence import COUNTRY_CARRIED
from consumers.state.writes import CountryWrite, RoamingWrite, Version, Write
from consumers.worker import Handler, applying


class RoamingEvent(NamedTuple):
    """What one roaming event says: ``roaming`` (None: read ``data.roaming``) and whether it
    may carry a country."""

    roaming: bool | None
    carries_country: bool


ROAMING_EVENTS: Final[dict[str, RoamingEvent]] = {
    "roaming-status": RoamingEvent(None, carries_country=True),
    "roaming-on": RoamingEvent(True, carries_country=False),
    "roaming-off": RoamingEvent(False, carries_country=False),
    "roaming-change-country": RoamingEvent(True, carries_country=True),
}


def plan(event: Event) -> list[Write]:
    """The writes of one event on the roaming queue."""
    name = event_name(event.type)
    if name in LIFECYCLE:
        return plan_lifecycle(event)
    rule = ROAMING_EVENTS.get(name)
    if rule is None:
        return ignore(event, "roaming")
    return _plan_roaming(event, rule)


def _plan_roaming(event: Event, rule: RoamingEvent) -> list[Write]:
    data = data_of(event)
    device = require_device(event)
    writes: list[Write] = []
    roaming = rule.roaming
    if roaming is None:
        value = data.get("roaming")
        if value is not None and not isinstance(value, bool):
            raise Unprocessable("data.roaming must be true or false")
        roaming = value
    at = version(event)
    if roaming is not None:
        writes.append(RoamingWrite(device, roaming, at))
    code, names = _country(data) if rule.carries_country else (None, None)
    if code is not None or names is not None:
        at = Version(at.tier, at.time, COUNTRY_CARRIED, at.source, at.event_id)
    writes.append(CountryWrite(device, code, names, at))
    return writes


def _country(data: dict[str, Any]) -> tuple[int | None, tuple[str, ...] | None]:
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
    return code, None if names is None else tuple(names)


def make_handler(store: StateStore) -> Handler:
    """``plan`` applied to ``store`` one event at a time (a custom handler can reuse it)."""
    return applying(store, plan)
