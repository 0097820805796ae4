"""What beats what: the precedence of the built-in events, as data (contract §5).

Every write carries a ``Version`` (``consumers.state.writes``): ``(tier, time, rank, source,
event_id)``, compared in that order, the greater winning. So:

* ``tier`` beats time: a final state (an ``ENDED`` subscription, a final Notify status) is
  ``FINAL`` and no non-final event, whatever its time, replaces it;
* ``time`` orders the rest: an older event never overwrites a newer one;
* ``rank`` breaks a tie in time by what the events mean (``subscription-updated`` follows
  ``-started``; a country an event carries beats the "country unknown" of a ``roaming-on``
  of the same move);
* ``(source, event_id)``, the CloudEvents identity, only decides between two different events
  that agree on all of that, so every replica and every delivery order ends the same; the
  same ``(source, id)`` twice is one event.
"""

from __future__ import annotations

from typing import Final, NamedTuple

ORDINARY: Final = 0
FINAL: Final = 1


class Lifecycle(NamedTuple):
    """A subscription lifecycle event: the status it sets (None: from ``updateReason``)."""

    status: str | None
    tier: int
    rank: int


SUBSCRIPTION_LIFECYCLE: Final[dict[str, Lifecycle]] = {
    "subscription-started": Lifecycle("ACTIVE", ORDINARY, 0),
    "subscription-updated": Lifecycle(None, ORDINARY, 1),
    # v0.8 says -ended, v0.5-v0.7 -ends: the same end, final whatever comes after it.
    "subscription-ended": Lifecycle("ENDED", FINAL, 2),
    "subscription-ends": Lifecycle("ENDED", FINAL, 2),
}
UPDATE_REASONS: Final[dict[str, str]] = {
    "SUBSCRIPTION_ACTIVE": "ACTIVE",
    "SUBSCRIPTION_INACTIVE": "INACTIVE",
}

# Country group ranks: an event that says the country beats one that only implies "unknown".
COUNTRY_IMPLIED: Final = 0
COUNTRY_CARRIED: Final = 1

# Notify statuses after which a notification never changes again (GOV.UK, Notify.gov).
FINAL_MESSAGE_STATUSES: Final = frozenset(
    {
        "delivered",
        "permanent-failure",
        "temporary-failure",
        "technical-failure",
        "failed",
        "cancelled",
        "validation-failed",
    }
)


def message_tier(status: str) -> int:
    """``FINAL`` for a final Notify status, else ``ORDINARY``."""
    return FINAL if status in FINAL_MESSAGE_STATUSES else ORDINARY
