"""A token bucket per source: ``rate_limit`` requests a second, bursts up to twice that.

Pure bookkeeping over a clock the caller passes in; one bucket per source, nothing per
client, nothing kept for a refused request.
"""

from __future__ import annotations

import math

BURST_FACTOR = 2.0


class TokenBucket:
    """Holds up to ``2 * rate`` tokens, refilled at ``rate`` a second; a request takes one."""

    __slots__ = ("_capacity", "_rate", "_tokens", "_updated")

    def __init__(self, rate: float, now: float) -> None:
        self._rate = rate
        self._capacity = max(1.0, rate * BURST_FACTOR)
        self._tokens = self._capacity
        self._updated = now

    def take(self, now: float) -> float:
        """Take a token: 0.0 when the request may go, else the seconds until one is free."""
        elapsed = now - self._updated
        if elapsed > 0:
            self._tokens = min(self._capacity, self._tokens + elapsed * self._rate)
            self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate


def retry_after(wait_s: float) -> str:
    """The ``Retry-After`` value for a wait: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait_s)))
