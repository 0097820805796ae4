"""Private RabbitMQ nodes for the broker-fault tests, through ``scripts/rabbitmq-cluster``.

The script owns the layout (names, ports, data, cookie); this wraps it for pytest. A fixture
starts what it needs and stops only what it started, so a cluster a developer started by hand
is reused and left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from aio_pika.abc import AbstractQueue, AbstractRobustConnection
from aiormq.exceptions import AMQPError
from yarl import URL

from gateway.broker_connect import connect_robust
from tests.broker import topology_names

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "rabbitmq-cluster"
SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
START_TIMEOUT_S = 180


def script(*args: str) -> str:
    """Run ``scripts/rabbitmq-cluster`` with ``args``; its stdout, stripped."""
    done = subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=START_TIMEOUT_S
    )
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmq-cluster {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def _running(*args: str) -> bool:
    try:
        script(*args)
    except RuntimeError:
        return False
    return True


def require_server() -> None:
    if not SERVER.exists():
        pytest.skip(f"no {SERVER}: RabbitMQ is not installed here")


@dataclass(frozen=True)
class Cluster:
    """The three nodes' AMQP URLs; node numbers are 1-3, in the order of ``urls``."""

    urls: tuple[str, ...]

    def number_of(self, node: str) -> int:
        """The node number of ``host:port`` (``Publisher.node``)."""
        for number, url in enumerate(self.urls, start=1):
            parsed = URL(url)
            if node == f"{parsed.host}:{parsed.port}":
                return number
        raise AssertionError(f"{node} is not a node of this cluster")

    def pid(self, number: int) -> int:
        return int(script("pid", str(number)))

    def restart(self, number: int) -> None:
        """Start a node again on its data (after a kill); it rejoins the cluster."""
        script("start-node", str(number))


@pytest.fixture(scope="session", name="cluster")
def cluster_fixture() -> Iterator[Cluster]:
    """A 3-node cluster (started here unless already running; stopped if started here)."""
    require_server()
    already = all(_running("pid", str(number)) for number in (1, 2, 3))
    urls = tuple(script("start").split(","))
    yield Cluster(urls)
    if not already:
        script("stop")


@dataclass(frozen=True)
class SingleNode:
    """One private node alone, for alarm tests."""

    url: str

    def ctl(self, *args: str) -> str:
        return script("single", "ctl", *args)


@pytest.fixture(scope="session", name="single_node")
def single_node_fixture() -> Iterator[SingleNode]:
    """A private node of its own (started here unless already running; stopped if so)."""
    require_server()
    already = _running("single", "pid")
    url = script("single", "start")
    yield SingleNode(url)
    if not already:
        script("single", "stop")


@contextlib.asynccontextmanager
async def connection_to(urls: Sequence[str]) -> AsyncIterator[AbstractRobustConnection]:
    """A failover connection to ``urls`` for the test's own reads and clean-up."""
    connection = await connect_robust(urls, connect_timeout_s=10, reconnect_interval=0.5)
    try:
        yield connection
    finally:
        await connection.close()


async def delete_prefix(connection: AbstractRobustConnection, prefix: str, *queues: str) -> None:
    """Delete what an ingress and the test declared under ``prefix`` on a private broker."""
    exchanges, declared = topology_names(prefix)
    for queue in (*declared, *queues):
        channel = await connection.channel()
        with contextlib.suppress(AMQPError):
            await channel.queue_delete(queue)
    for exchange in exchanges:
        channel = await connection.channel()
        with contextlib.suppress(AMQPError):
            await channel.exchange_delete(exchange)


async def missing_ids(queue: AbstractQueue, wanted: set[str], timeout: float) -> set[str]:
    """The ids of ``wanted`` not read from ``queue`` (as ``message_id``) within ``timeout``;
    what is read is taken off the queue."""
    loop = asyncio.get_running_loop()
    stored: set[str] = set()
    deadline = loop.time() + timeout
    while not wanted <= stored and loop.time() < deadline:
        message = await queue.get(no_ack=True, fail=False)
        if message is None:
            await asyncio.sleep(0.05)  # poll interval while the queue fills
            continue
        assert message.message_id is not None
        stored.add(message.message_id)
    return wanted - stored
