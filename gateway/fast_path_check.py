"""The fence around the fast publish path: does this aiormq still work the way it assumes?

``ConfirmStream`` writes aiormq's ``Channel.delivery_tag`` and ``Channel.confirmations`` and the
connection's socket directly, none of which aiormq documents. An aiormq release that renames or
reworks them must not turn into a 500 (or a timeout) on every request, so every time the
publisher opens a stream it runs this check, and falls back to plain aio-pika publishing when it
fails:

- ``check_internals``: the attributes exist and have the types the stream uses;
- ``round_trip``: one real publish through the stream (to the default exchange, routed nowhere,
  so the broker drops it) comes back confirmed within the publish timeout: the whole chain of
  encoding, delivery tags and aiormq's confirm bookkeeping works end to end.

Errors:
    FastPathUnsupported: the check failed; the message says which assumption broke.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import Any

from gateway.amqp_wire import Outgoing
from gateway.confirm_stream import ConfirmStream

PROBE_TYPE = "event-gateway.self-check"


class FastPathUnsupported(Exception):
    """An aiormq internal the fast path relies on is missing or behaves differently."""


def check_internals(channel: Any, writer: Any) -> None:
    """Raise FastPathUnsupported unless ``channel`` (an aiormq ``Channel``) and ``writer`` (its
    connection's ``StreamWriter``) have what ``ConfirmStream`` uses."""
    expected: tuple[tuple[str, Any, type | tuple[type, ...]], ...] = (
        ("Channel.delivery_tag", channel, int),
        ("Channel.confirmations", channel, MutableMapping),
        ("Channel.number", channel, int),
        ("Channel.max_content_size", channel, int),
        ("Channel.is_closed", channel, bool),
    )
    for name, owner, kind in expected:
        attribute = name.split(".")[1]
        value = getattr(owner, attribute, None)
        if not isinstance(value, kind):
            raise FastPathUnsupported(f"aiormq {name} is {type(value).__name__}, not {kind}")
    if not callable(getattr(channel, "create_future", None)):
        raise FastPathUnsupported("aiormq Channel.create_future is missing")
    transport = getattr(writer, "transport", None)
    for method in ("get_write_buffer_size", "writelines", "is_closing"):
        if not callable(getattr(transport, method, None)):
            raise FastPathUnsupported(f"the connection's transport has no {method}()")


async def round_trip(stream: ConfirmStream, routing_key: str, timeout_s: float) -> None:
    """Publish one probe through ``stream`` and wait for its confirm, or raise
    FastPathUnsupported. ``routing_key`` names no queue: the default exchange drops it."""
    probe = Outgoing("", routing_key, b"{}", "application/json", PROBE_TYPE, PROBE_TYPE)
    try:
        async with asyncio.timeout(timeout_s):
            await stream.wait_writable()
            await stream.publish(probe, 0)
    except TimeoutError:
        raise FastPathUnsupported(
            f"the probe publish was not confirmed in {timeout_s:g}s"
        ) from None
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        raise FastPathUnsupported("the probe's confirm was cancelled") from None
    except Exception as exc:
        raise FastPathUnsupported(f"the probe publish failed: {exc!r}") from exc
