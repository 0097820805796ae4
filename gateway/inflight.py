"""The in-flight budget: how much memory request bodies may hold at once (``max_inflight_bytes``).

A body is charged from the moment it is read until its request is answered, in two steps:

1. before reading, its ``Content-Length`` (or ``max_body_bytes`` when chunked);
2. once read, what it will become: parsed JSON is many times its size in bytes
   (``[{},{},…]`` is 24 times: a 64-byte dict and an 8-byte pointer per 3 bytes), so the
   charge grows to ``parsed_cost(body)``, an upper bound counted from the body's own
   brackets and separators (one pass of ``bytes.count`` each, ~0.1 ms for 256 KiB).

Past the budget the request gets 503 + ``Retry-After``. One source may hold at most half of
it, so a single sender cannot starve the others. A body whose cost alone is over that share
is admitted only while its source holds nothing else, charged the whole share: a valid
request is never refused for ever, and at most one such body per source is parsed at a time.

Pure bookkeeping: no I/O, no web stack.
"""

from __future__ import annotations

from collections.abc import Callable

# Upper bounds measured with tracemalloc on orjson.loads of 256 KiB bodies (CPython 3.11):
# every container ([] or {}: 56-72 bytes, 184 with a key) and every element or member
# (an 8-byte slot and usually an object of 24-58 bytes) is charged on top of the bytes,
# which are held about four times: the body, the parsed strings, the re-serialised message
# (or the JSON-escaped copy in a rejected record).
CONTAINER_COST = 96
ITEM_COST = 64
BYTES_FACTOR = 4
SOURCE_SHARE = 0.5


def parsed_cost(body: bytes) -> int:
    """An upper bound of the memory ``body`` takes from read until answered, parsed included."""
    containers = body.count(b"{") + body.count(b"[")
    items = body.count(b",") + body.count(b":")
    return BYTES_FACTOR * len(body) + CONTAINER_COST * containers + ITEM_COST * items


class InflightBudget:
    """Bytes charged to the requests in flight, in total and per source."""

    __slots__ = ("_burst", "_by_source", "held", "high_water", "limit", "on_drained", "share")

    def __init__(
        self,
        limit: int,
        share: float = SOURCE_SHARE,
        on_drained: Callable[[], object] | None = None,
    ) -> None:
        self.limit = limit
        self.share = max(1, int(limit * share))
        self.held = 0
        self.high_water = 0
        # Called when nothing is held any more after a burst of at least a share (the
        # ingress gives the freed memory back to the system then: gateway.memory).
        self.on_drained = on_drained
        self._burst = 0
        self._by_source: dict[str, int] = {}

    def charge(self, source: str) -> Reservation:
        """An empty charge for one request of ``source``, to ``resize`` as its body arrives."""
        return Reservation(self, source)

    def reserve(self, source: str, amount: int) -> Reservation | None:
        """Charge ``amount`` to ``source``, or None when that would pass the budget."""
        reservation = Reservation(self, source)
        return reservation if reservation.resize(amount) else None

    def source_held(self, source: str) -> int:
        return self._by_source.get(source, 0)

    def _change(self, source: str, delta: int) -> None:
        self.held += delta
        held = self._by_source.get(source, 0) + delta
        if held:
            self._by_source[source] = held
        else:
            del self._by_source[source]
        if self.held > self._burst:
            self._burst = self.held
            if self.held > self.high_water:
                self.high_water = self.held
        elif not self.held and self._burst >= self.share:
            self._burst = 0
            if self.on_drained is not None:
                self.on_drained()


class Reservation:
    """One request's charge; ``resize`` it once the body is read, ``release`` it when answered."""

    __slots__ = ("_budget", "_source", "amount")

    def __init__(self, budget: InflightBudget, source: str) -> None:
        self._budget = budget
        self._source = source
        self.amount = 0

    def resize(self, amount: int) -> bool:
        """Change the charge to ``amount``; False (charge unchanged) if it does not fit."""
        budget = self._budget
        others = budget.source_held(self._source) - self.amount
        if amount > budget.share:
            if others:
                return False
            amount = budget.share  # alone: admitted, holding the whole share
        if budget.held - self.amount + amount > budget.limit or others + amount > budget.share:
            return False
        budget._change(self._source, amount - self.amount)
        self.amount = amount
        return True

    def release(self) -> None:
        if self.amount:
            self._budget._change(self._source, -self.amount)
            self.amount = 0
