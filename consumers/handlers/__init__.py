"""The built-in handlers, by worker name: each module's ``make_handler(store)``.

Adding a built-in worker is one module, one line in ``HANDLERS`` and its bindings in
``gateway.topology.BUILTIN_BINDINGS``.
"""

from __future__ import annotations

from consumers.handlers import reachability, roaming, sms
from consumers.worker import HandlerFactory, WorkerSpec
from gateway.settings import AmqpSettings
from gateway.topology import BUILTIN_BINDINGS, Names

HANDLERS: dict[str, HandlerFactory] = {
    "roaming": roaming.make_handler,
    "reachability": reachability.make_handler,
    "sms": sms.make_handler,
}


def builtin_spec(amqp: AmqpSettings, name: str) -> WorkerSpec:
    """The spec of built-in worker ``name`` (``roaming``, ``reachability``, ``sms``): queue
    ``<exchange>.<name>`` with its contract bindings. KeyError for an unknown name."""
    return WorkerSpec(
        queue=Names.for_prefix(amqp.exchange).queue(name),
        bindings=BUILTIN_BINDINGS[name],
        handler_factory=HANDLERS[name],
    )


__all__ = ["HANDLERS", "builtin_spec"]
