"""What every adapter is given besides the request, and the adapter signature itself."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from gateway.cloudevent import CloudEvent, parse_time

DEFAULT_MAX_FUTURE_SKEW_S = 300.0
DEFAULT_MAX_EVENTS = 1000
DEFAULT_FRAME_MAX = 131072  # RabbitMQ's default frame size
_LATEST_POSSIBLE = datetime.max.replace(tzinfo=UTC)


class Context:
    """Facts about one request that the ingress knows and the body does not. Read-only.

    A plain slotted class rather than a frozen dataclass: one is built per request, and the
    frozen dataclass's ``__init__`` (``object.__setattr__`` per field) measured 1.9 us against
    0.7 us for this one.
    """

    __slots__ = (
        "frame_max",
        "latest_time",
        "max_events",
        "received",
        "source_name",
        "traceparent",
        "tracestate",
    )

    def __init__(
        self,
        source_name: str,
        received: str,
        max_future_skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S,
        max_events: int = DEFAULT_MAX_EVENTS,
        frame_max: int = DEFAULT_FRAME_MAX,
        received_at: datetime | None = None,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> None:
        self.source_name = source_name  # the configured source's name, e.g. "camara"
        self.received = received  # RFC 3339 receive time (becomes gatewayreceived)
        self.max_events = max_events  # [http] max_events_per_request: a bigger batch is 413
        self.frame_max = frame_max  # the broker connection's frame size (0: no limit)
        # The latest event ``time`` accepted: the receive time plus the source's skew (§8).
        self.latest_time = _latest(received_at or parse_time(received), max_future_skew_s)
        # The request's W3C trace context (gateway.trace_context): every event without its
        # own gets it as its ``traceparent``/``tracestate`` (CloudEvents Distributed Tracing).
        self.traceparent = traceparent
        self.tracestate = tracestate

    @property
    def callback_source(self) -> str:
        """The CloudEvent ``source`` for events the gateway has to name itself."""
        return f"/callbacks/{self.source_name}"

    def __repr__(self) -> str:
        return (
            f"Context({self.source_name!r}, {self.received!r}, latest_time={self.latest_time!r}, "
            f"max_events={self.max_events!r}, frame_max={self.frame_max!r})"
        )


def _latest(received_at: datetime, skew_s: float) -> datetime:
    try:
        return received_at + _skew(skew_s)
    except OverflowError:
        return _LATEST_POSSIBLE


@lru_cache(maxsize=64)  # one value per source in practice
def _skew(seconds: float) -> timedelta:
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        return timedelta.max


# (headers with case-insensitive lookup, raw body, context) -> events; raises AdapterError.
Normalize = Callable[[Mapping[str, str], bytes, Context], list[CloudEvent]]
