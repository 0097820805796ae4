"""``accepts_publishes`` reads aiormq's connected/unblocked events directly, and agrees with
stepping ``Connection.ready()`` (its fallback) in every state. The real memory and disk alarms
are in ``tests/test_broker_alarms.py`` (cluster marker)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.broker_connect import accepts_publishes, connect_robust, ready_now
from tests.broker import AMQP_URL
from tests.tcp_proxy import TcpProxy


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


async def test_cancelled_while_connecting_leaves_no_task_behind(proxy: TcpProxy) -> None:
    """A connect cancelled mid-handshake (SIGTERM during start-up) closes the half-made
    connection: none of its tasks is left for ``asyncio.run`` to cancel (one of aiormq's
    never finished, and the process hung at exit)."""
    before = asyncio.all_tasks()

    def amqp_tasks() -> list[asyncio.Task[Any]]:
        """Tasks this test started but for the proxy's own."""
        return [
            task
            for task in asyncio.all_tasks() - before
            if not task.done() and "TcpProxy" not in repr(task.get_coro())
        ]

    proxy.stall()  # the TCP connection opens; the AMQP handshake never completes
    try:
        connecting = asyncio.create_task(
            connect_robust([proxy.url_for(AMQP_URL)], connect_timeout_s=30)
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while len(amqp_tasks()) < 2:  # the connect and aiormq's own
            assert loop.time() < deadline, "the connection attempt did not start"
            await asyncio.sleep(0.01)
        connecting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await connecting
        deadline = loop.time() + 10
        while left := amqp_tasks():
            assert loop.time() < deadline, f"tasks left behind: {left}"
            await asyncio.sleep(0.01)
    finally:
        proxy.resume()
