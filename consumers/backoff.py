"""Waiting between attempts to reach the broker or the state store, and telling an outage
from a failed event.

A worker never gives up on its broker or its store (contract §9): it waits ``Backoff``'s
next delay (0.5 s doubling up to 30 s, each ±20% so that replicas do not retry in step) and
tries again. ``store_unreachable`` says whether a handler's exception means the store is
down rather than the event being bad: such a failure uses up no attempt of the event.
"""

from __future__ import annotations

import random
import sys

from consumers.state.store import StateStoreUnavailable


class Backoff:
    """Delays that double from ``first_s`` up to ``cap_s``, each moved by ±``jitter``."""

    def __init__(self, first_s: float = 0.5, cap_s: float = 30.0, jitter: float = 0.2) -> None:
        self.first_s, self.cap_s, self.jitter = first_s, cap_s, jitter
        self.attempts = 0

    def next(self) -> float:
        """The wait before the next attempt (one more failed attempt counted)."""
        base = min(self.cap_s, self.first_s * 2.0 ** min(self.attempts, 32))
        self.attempts += 1
        spread: float = random.uniform(-self.jitter, self.jitter)  # noqa: S311 - not a secret
        return base * (1.0 + spread)

    def reset(self) -> None:
        """The thing answered: start again from ``first_s``."""
        self.attempts = 0


def store_unreachable(exc: BaseException) -> bool:
    """True when ``exc`` says the state store cannot be reached (network, server restart,
    too many connections), not that this event's writes were refused."""
    if isinstance(exc, StateStoreUnavailable | OSError | TimeoutError):
        return True
    asyncpg = sys.modules.get("asyncpg")  # imported by the PostgreSQL store only
    if asyncpg is None:
        return False
    errors = asyncpg.exceptions
    return isinstance(
        exc,
        asyncpg.PostgresConnectionError
        | asyncpg.InterfaceError
        | errors.OperatorInterventionError
        | errors.TooManyConnectionsError,
    )
