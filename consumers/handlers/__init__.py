"""The built-in handlers, by worker name: each module's ``plan(event) -> writes``.

A built-in handler is a pure planner (``consumers.worker.Planner``): it says what an event
changes, field group by field group with its version (``consumers.state.writes``,
``consumers.state.precedence``); the worker applies the writes of a batch at once. Adding a
built-in worker is one module, one line in ``HANDLERS`` and its bindings in
``gateway.topology.BUILTIN_BINDINGS``.
"""

from __future__ import annotations

from consumers.handlers import reachability, roaming, sms
from consumers.worker import Planner, WorkerSpec
from gateway.settings import AmqpSettings
from gateway.topology import BUILTIN_BINDINGS, Names

HANDLERS: dict[str, Planner] = {
    "roaming": roaming.plan,
    "reachability": reachability.plan,
    "sms": sms.plan,
}


def builtin_spec(amqp: AmqpSettings, name: str) -> WorkerSpec:
    """The spec of built-in worker ``name`` (``roaming``, ``reachability``, ``sms``): queue
    ``<exchange>.<name>`` with its contract bindings. KeyError for an unknown name."""
    return WorkerSpec(
        queue=Names.for_prefix(amqp.exchange).queue(name),
        bindings=BUILTIN_BINDINGS[name],
        planner=HANDLERS[name],
    )


__all__ = ["HANDLERS", "builtin_spec"]
