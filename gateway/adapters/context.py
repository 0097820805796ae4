"""What every adapter is given besides the request, and the adapter signature itself."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from gateway.cloudevent import CloudEvent, parse_time

DEFAULT_MAX_FUTURE_SKEW_S = 300.0
DEFAULT_MAX_EVENTS = 1000
DEFAULT_FRAME_MAX = 131072  # RabbitMQ's default frame size
_LATEST_POSSIBLE = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Context:
    """Facts about one request that the ingress knows and the body does not."""

    source_name: str  # the configured source's name, e.g. "camara"
    received: str  # RFC 3339 receive time, already formatted (becomes gatewayreceived)
    max_future_skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S  # the source's, §8
    max_events: int = DEFAULT_MAX_EVENTS  # [http] max_events_per_request: more is 413
    frame_max: int = DEFAULT_FRAME_MAX  # the broker connection's frame size (0: no limit)
    received_at: datetime | None = None  # ``received`` as a datetime, when the caller has it
    # The request's W3C trace context (gateway.trace_context): every event without its own
    # gets it as its ``traceparent``/``tracestate`` (CloudEvents Distributed Tracing, §9).
    traceparent: str | None = None
    tracestate: str | None = None
    # The latest event ``time`` accepted: receive time plus the skew.
    latest_time: datetime = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        received_at = self.received_at or parse_time(self.received)
        try:
            latest = received_at + timedelta(seconds=self.max_future_skew_s)
        except OverflowError:
            latest = _LATEST_POSSIBLE
        object.__setattr__(self, "latest_time", latest)

    @property
    def callback_source(self) -> str:
        """The CloudEvent ``source`` for events the gateway has to name itself."""
        return f"/callbacks/{self.source_name}"


# (headers with case-insensitive lookup, raw body, context) -> events; raises AdapterError.
Normalize = Callable[[Mapping[str, str], bytes, Context], list[CloudEvent]]
