"""``accepts_publishes`` reads aiormq's connected/unblocked events directly, and agrees with
stepping ``Connection.ready()`` (its fallback) in every state. The real memory and disk alarms
are in ``tests/test_broker_alarms.py`` (cluster marker)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.broker_connect import accepts_publishes, connect_robust, ready_now
from tests.broker import AMQP_URL


def _by_ready(connection: object) -> bool:
    """The fallback: step ``ready()`` once (finishing means ready)."""
    return ready_now(connection.transport.connection)  # type: ignore[attr-defined]


async def test_blocked_and_unblocked_read_from_the_events(monkeypatch: pytest.MonkeyPatch) -> None:
    connection = await connect_robust([AMQP_URL], connect_timeout_s=10)
    try:
        amqp = connection.transport.connection  # type: ignore[union-attr]
        unblocked: asyncio.Event = amqp._Connection__connection_unblocked
        assert accepts_publishes(connection) is _by_ready(connection) is True
        unblocked.clear()  # what aiormq does on connection.blocked
        assert accepts_publishes(connection) is _by_ready(connection) is False
        monkeypatch.delattr(amqp, "_Connection__connection_unblocked")
        monkeypatch.setattr(amqp, "ready", lambda: _never_ready())
        assert accepts_publishes(connection) is False  # the fallback path
        monkeypatch.undo()
        unblocked.set()
        assert accepts_publishes(connection) is True
    finally:
        await connection.close()
    assert accepts_publishes(connection) is False  # closed: no transport


async def _never_ready() -> None:
    await asyncio.Event().wait()
