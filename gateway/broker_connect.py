"""Connecting to one node of a RabbitMQ cluster, and moving to another when it goes away.

aio-pika's robust connection reconnects to the one URL it was given. ``connect_robust`` here
takes every node's URL (``[amqp] url`` as a list; ``AmqpSettings.urls``): it connects to the
first node that answers, and each time the connection closes or an attempt to reconnect fails
it points the connection at the next node. aio-pika's own reconnect loop, which restores the
channels, exchanges, queues and consumers declared through the connection, so walks round the
cluster until a node answers; callers keep their ``reconnect_callbacks`` as before.

Each URL brings its own host, port, credentials and virtual host; the query parameters of the
first URL configure the connection (aio-pika reads them once). Used by the ingress and the
workers alike, so this module imports no web stack.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aio_pika import RobustConnection
from aio_pika.abc import AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS
from aiormq.abc import AbstractConnection
from aiormq.connection import TransportFactory
from yarl import URL

# Every way an attempt to reach a node can fail (refused, reset, timed out, AMQP-level refusal).
CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    *CONNECTION_EXCEPTIONS,
    ConnectionError,
    OSError,
    TimeoutError,
)


class NodeRing:
    """The URLs of a cluster's nodes and which one to try next, round and round."""

    def __init__(self, urls: Sequence[str | URL]) -> None:
        if not urls:
            raise ValueError("at least one broker URL is needed")
        self._urls = tuple(URL(url) for url in urls)
        self._index = 0

    def __len__(self) -> int:
        return len(self._urls)

    @property
    def current(self) -> URL:
        return self._urls[self._index]

    def advance(self) -> URL:
        """Move to the next node and return its URL."""
        self._index = (self._index + 1) % len(self._urls)
        return self.current


def node_name(url: URL | str) -> str:
    """``host:port`` of a broker URL: what a log line may say about a node (no credentials)."""
    parsed = URL(url)
    return f"{parsed.host}:{parsed.port}"


def connected_node(connection: AbstractRobustConnection) -> str:
    """``host:port`` of the node ``connection`` is on (or trying next)."""
    return node_name(connection.url) if isinstance(connection, RobustConnection) else "?"


class _MoveOn:
    """A close callback: the connection's next attempt goes to the next node.

    aio-pika calls a connection's close callbacks when an established connection is lost and
    when an attempt to (re)connect fails, in every release of the pinned range (10.x), so this
    sees both. ``Connection.url`` is the public attribute the next attempt reads.
    """

    def __init__(self, nodes: NodeRing) -> None:
        self._nodes = nodes

    def __call__(self, connection: Any, *_: Any) -> None:
        if len(self._nodes) > 1 and isinstance(connection, RobustConnection):
            connection.url = self._nodes.advance()


async def connect_robust(
    urls: Sequence[str],
    *,
    connect_timeout_s: float,
    transport_factory: TransportFactory | None = None,
    **kwargs: Any,
) -> AbstractRobustConnection:
    """A robust connection to the first node of ``urls`` that answers, which moves to the next
    node whenever its own goes away. Raises the last node's error when none answers.

    ``kwargs`` are ``aio_pika.RobustConnection``'s (``reconnect_interval``,
    ``client_properties``, ...). ``transport_factory`` opens the sockets (aiormq's extension
    point; the ingress's fast path uses it to find the connection's stream).
    """
    nodes = NodeRing(urls)
    error: BaseException | None = None
    for _ in range(len(nodes)):
        connection = RobustConnection(nodes.current, **kwargs)
        if transport_factory is not None:
            # aio-pika would also copy a keyword argument into the URL, which holds only text.
            connection.kwargs["transport_factory"] = transport_factory
        try:
            await connection.connect(timeout=connect_timeout_s)
        except CONNECT_ERRORS as exc:
            error = exc
            await connection.close()
            nodes.advance()
            continue
        except asyncio.CancelledError:
            # Stopped while connecting (SIGTERM during start-up): a half-made connection
            # left open keeps aiormq tasks that never finish, and the process never exits.
            await connection.close()
            raise
        connection.close_callbacks.add(_MoveOn(nodes))
        return connection
    assert error is not None
    raise error


def accepts_publishes(connection: AbstractRobustConnection) -> bool:
    """False while ``connection`` is down or the broker blocks it (``connection.blocked``: a
    memory or disk alarm), True otherwise.

    aiormq tracks ``connection.blocked``/``unblocked`` but shows it only through
    ``Connection.ready()``, a coroutine that returns at once when the connection is up and not
    blocked and waits otherwise. This reads the two events ``ready()`` waits on; should aiormq
    rename them, it steps ``ready()`` once instead (``ready_now``).
    ``tests/test_broker_alarms.py`` checks it against a node under a real memory or disk alarm.
    """
    transport = getattr(connection, "transport", None)
    if transport is None:
        return False
    amqp = transport.connection
    # The events ``ready()`` waits on, read directly (a coroutine per publish costs ~1 µs);
    # should aiormq rename them, ``ready()`` itself is stepped.
    unblocked = getattr(amqp, "_Connection__connection_unblocked", None)
    connected = getattr(amqp, "connected", None)
    if isinstance(unblocked, asyncio.Event) and isinstance(connected, asyncio.Event):
        return connected.is_set() and unblocked.is_set()
    return ready_now(amqp)


def ready_now(amqp: AbstractConnection) -> bool:
    """Step aiormq's ``Connection.ready()`` once and close it: finishing means ready."""
    waiter = amqp.ready()
    try:
        waiter.send(None)
    except StopIteration:
        return True
    finally:
        waiter.close()
    return False
