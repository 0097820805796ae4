"""Built-in workers apply an event only when its source may send it (contract §8).

The ingress stamps every event with ``gatewaysource``, the configured source it came
through, and refuses types that source may not send. Anything else on the exchange (a
message published there directly, an old or foreign publisher) did not pass that door: a
built-in handler does not apply it, the worker dead-letters it (``Unprocessable``, so
``.dlq`` with ``x-gateway-error``). The rule is ``gateway.type_patterns``', the ingress's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar, cast

from consumers.event import SOURCE_EXTENSION, Event, Unprocessable
from gateway.settings import Source
from gateway.type_patterns import SourceTypes

Planner = Callable[[Event], Sequence[Any]]


class SourcePolicy:
    """Which configured source may send which event types."""

    def __init__(self, sources: Iterable[Source]) -> None:
        self._types = {source.name: SourceTypes(source.adapter, source.types) for source in sources}

    def refusal(self, event: Event) -> str | None:
        """Why ``event`` must not be applied, or None when its source may send it."""
        name = event.extensions.get(SOURCE_EXTENSION)
        if not isinstance(name, str):
            return f"no {SOURCE_EXTENSION}: the event did not come through the ingress"
        types = self._types.get(name)
        if types is None:
            return f"{SOURCE_EXTENSION} {name!r} is not a configured source"
        if not types.allows(event.type):
            return f"source {name!r} may not send events of type {event.type!r}"
        return None

    def check(self, event: Event) -> None:
        """Raise ``Unprocessable`` when ``event`` must not be applied."""
        reason = self.refusal(event)
        if reason is not None:
            raise Unprocessable(reason)


P = TypeVar("P", bound=Planner)


def guarded(planner: P, policy: SourcePolicy) -> P:
    """``planner`` that first checks ``policy`` (refused: ``Unprocessable``)."""

    def plan(event: Event) -> Sequence[Any]:
        policy.check(event)
        return planner(event)

    return cast(P, plan)
