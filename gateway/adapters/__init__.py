"""Adapters: pure functions from one HTTP request to CloudEvents, one module per provider.

Each is ``normalize(headers, body, ctx) -> list[CloudEvent]`` (see ``Normalize``): ``headers``
looks names up case-insensitively, ``body`` is the raw bytes, ``ctx`` says which source the
request came to and when. They do no I/O, import no web stack, and raise only ``AdapterError``
(``BadRequest`` 400, ``UnsupportedMediaType`` 415) for a request they cannot turn into events.
Adding a provider is one module and one line in ``ADAPTERS``.
"""

from __future__ import annotations

from gateway.adapters import camara, cloudevents, notify_delivery_status, notify_inbound_sms
from gateway.adapters.context import Context, Normalize
from gateway.adapters.errors import AdapterError, BadRequest, UnsupportedMediaType

ADAPTERS: dict[str, Normalize] = {
    "camara": camara.normalize,
    "cloudevents": cloudevents.normalize,
    "notify-delivery-status": notify_delivery_status.normalize,
    "notify-inbound-sms": notify_inbound_sms.normalize,
}

__all__ = [
    "ADAPTERS",
    "AdapterError",
    "BadRequest",
    "Context",
    "Normalize",
    "UnsupportedMediaType",
]
