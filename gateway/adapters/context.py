"""What every adapter is given besides the request, and the adapter signature itself."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.cloudevent import CloudEvent


@dataclass(frozen=True, slots=True)
class Context:
    """Facts about one request that the ingress knows and the body does not."""

    source_name: str  # the configured source's name, e.g. "camara"
    received: str  # RFC 3339 receive time, already formatted (becomes gatewayreceived)

    @property
    def callback_source(self) -> str:
        """The CloudEvent ``source`` for events the gateway has to name itself."""
        return f"/callbacks/{self.source_name}"


# (headers with case-insensitive lookup, raw body, context) -> events; raises AdapterError.
Normalize = Callable[[Mapping[str, str], bytes, Context], list[CloudEvent]]
