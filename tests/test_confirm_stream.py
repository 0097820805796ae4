"""ConfirmStream against the real broker: frames written straight to the socket are published
whole and in order, confirms resolve, and a broker that stops answering fails them in time."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from aiormq.channel import Channel
from aiormq.exceptions import AMQPError

from gateway.amqp_wire import Outgoing, attribute_table, table_key
from gateway.app import PUBLISHER
from gateway.broker_connect import connect_robust
from gateway.confirm_stream import ConfirmStream, StreamTracker
from gateway.publisher import Publisher
from tests.broker import AMQP_URL, drain
from tests.conftest import IngressFactory
from tests.tcp_proxy import TcpProxy
from tests.worker_support import eventually

TIMESTAMP = 1_795_000_000
_ids = itertools.count()


@dataclass
class Publishing:
    """A stream on its own connection, an exchange and a queue bound to it with ``#``."""

    stream: ConfirmStream
    connection: AbstractRobustConnection
    reader: AbstractChannel
    exchange: str
    queue: str

    def message(self, body: bytes = b"{}", **headers: str) -> Outgoing:
        table = attribute_table(headers, [(k, table_key(k)) for k in headers]) if headers else b""
        identifier = f"m-{next(_ids)}"
        return Outgoing(self.exchange, "t.x", body, "application/json", identifier, "t.x", table)


async def _publishing(
    prefix: str,
    url: str = AMQP_URL,
    *,
    timeout_s: float = 5.0,
    max_unsent_bytes: int = 1 << 23,
    max_unanswered: int = 2048,
) -> Publishing:
    streams = StreamTracker()
    connection = await connect_robust([url], connect_timeout_s=10, transport_factory=streams)
    reader = await connection.channel()
    exchange = await reader.declare_exchange(prefix, aio_pika.ExchangeType.TOPIC, auto_delete=True)
    queue = await reader.declare_queue(f"{prefix}.capture", auto_delete=False)
    await queue.bind(exchange, "#")
    channel = await connection.channel(publisher_confirms=True)
    wire = cast(Channel, await channel.get_underlay_channel())
    assert streams.writer is not None
    stream = ConfirmStream(
        wire,
        streams.writer,
        timeout_s=timeout_s,
        delivery_mode=2,
        app_id="test",
        max_unsent_bytes=max_unsent_bytes,
        max_unanswered=max_unanswered,
    )
    return Publishing(stream, connection, reader, prefix, queue.name)


@pytest.fixture
async def publishing(prefix: str) -> AsyncIterator[Publishing]:
    setup = await _publishing(prefix)
    yield setup
    await setup.connection.close()


async def test_many_concurrent_publishes_arrive_whole_and_in_order(
    publishing: Publishing,
) -> None:
    """500 publishes in one loop turn are all confirmed and stored in publish order."""
    messages = [publishing.message(f'{{"n":{n}}}'.encode(), **{"ce-n": str(n)}) for n in range(500)]
    confirms = [publishing.stream.publish(m, TIMESTAMP) for m in messages]
    await asyncio.wait_for(asyncio.gather(*confirms), 10)
    stored = await drain(publishing.reader, publishing.queue, 500)
    assert [m.message_id for m in stored] == [m.message_id for m in messages]
    assert [m.body for m in stored] == [m.body for m in messages]
    assert stored[7].headers == {"ce-n": "7"}
    assert stored[7].content_type == "application/json"
    assert stored[7].delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert stored[7].timestamp is not None
    assert stored[7].timestamp.timestamp() == TIMESTAMP


async def test_a_body_larger_than_a_frame_arrives_whole(publishing: Publishing) -> None:
    """A body over frame_max is split into several body frames and put back together."""
    body = bytes(range(256)) * 1200  # 307,200 bytes; RabbitMQ's frame_max is 131,072
    assert len(body) > publishing.stream.channel.max_content_size
    await asyncio.wait_for(publishing.stream.publish(publishing.message(body), TIMESTAMP), 10)
    [stored] = await drain(publishing.reader, publishing.queue, 1)
    assert stored.body == body


async def test_answered_confirms_leave_the_deadline_queue(publishing: Publishing) -> None:
    """Confirmed publishes are swept from the deadline queue without waiting for the timeout."""
    confirms = [publishing.stream.publish(publishing.message(), TIMESTAMP) for _ in range(50)]
    assert publishing.stream.pending == 50
    await asyncio.wait_for(asyncio.gather(*confirms), 10)
    await eventually(lambda: publishing.stream.pending == 0, 2.0, "an empty deadline queue")


async def test_an_unanswered_confirm_is_cancelled_at_its_deadline(
    prefix: str, proxy: TcpProxy
) -> None:
    """With the broker silent, the confirm is cancelled about ``timeout_s`` after the publish."""
    setup = await _publishing(prefix, proxy.url_for(AMQP_URL), timeout_s=0.3)
    try:
        proxy.stall()
        started = asyncio.get_running_loop().time()
        confirm = setup.stream.publish(setup.message(), TIMESTAMP)
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(confirm), 5)
        assert confirm.cancelled()
        assert 0.25 <= asyncio.get_running_loop().time() - started < 2.0
        assert setup.stream.pending == 0
    finally:
        proxy.resume()
        await setup.connection.close()


async def test_a_full_socket_makes_publishes_wait_until_it_drains(
    prefix: str, proxy: TcpProxy
) -> None:
    """Past ``max_unsent_bytes`` in the socket buffer, ``wait_writable`` waits (a broker that
    stopped reading can't grow the buffer without bound) and returns once the broker reads
    again; every message is then confirmed."""
    setup = await _publishing(
        prefix, proxy.url_for(AMQP_URL), timeout_s=30, max_unsent_bytes=1 << 20
    )
    try:
        proxy.stall()
        body = b"x" * (1 << 20)
        confirms = []
        for _ in range(64):  # far more than the kernel buffers plus the limit hold
            if setup.stream.unsent_bytes > 1 << 20:
                break
            confirms.append(setup.stream.publish(setup.message(body), TIMESTAMP))
            await asyncio.sleep(0)  # a loop turn: the stream flushes to the transport
        assert setup.stream.unsent_bytes > 1 << 20, "a stalled broker fills the socket"
        assert confirms, "publishes before the limit are written"
        waiting = asyncio.create_task(setup.stream.wait_writable())
        await asyncio.sleep(0)
        assert not waiting.done(), "over the limit, a publish waits for the socket to drain"
        proxy.resume()
        await asyncio.wait_for(waiting, 20)
        await asyncio.wait_for(asyncio.gather(*confirms), 20)
    finally:
        proxy.resume()
        await setup.connection.close()


async def test_requests_wait_their_turn_while_the_broker_has_not_answered(
    prefix: str, proxy: TcpProxy
) -> None:
    """With ``max_unanswered`` publishes unanswered, the next requests wait, and go in arrival
    order once confirms come back; every message is confirmed."""
    setup = await _publishing(prefix, proxy.url_for(AMQP_URL), timeout_s=30, max_unanswered=2)
    try:
        proxy.stall()
        earlier = [setup.stream.publish(setup.message(), TIMESTAMP) for _ in range(2)]
        assert not setup.stream.writable(1)
        order: list[str] = []

        async def request(name: str) -> asyncio.Future[object]:
            await setup.stream.wait_writable(1)
            order.append(name)
            return setup.stream.publish(setup.message(), TIMESTAMP)

        first = asyncio.create_task(request("first"))
        await asyncio.sleep(0)  # a loop turn: "first" is waiting
        second = asyncio.create_task(request("second"))
        await asyncio.sleep(0)
        assert not first.done()
        assert not second.done()
        proxy.resume()
        later = await asyncio.wait_for(asyncio.gather(first, second), 20)
        await asyncio.wait_for(asyncio.gather(*earlier, *later), 20)
        assert order == ["first", "second"]
        assert setup.stream.writable(1)
    finally:
        proxy.resume()
        await setup.connection.close()


async def test_pending_confirms_fail_when_the_connection_is_lost(
    prefix: str, proxy: TcpProxy
) -> None:
    """Confirms still pending when the connection drops fail at once with the broker error
    (the stream's one store-registered future), long before their deadline."""
    setup = await _publishing(prefix, proxy.url_for(AMQP_URL), timeout_s=30.0)
    try:
        proxy.stall()  # nothing comes back: the confirms stay pending
        confirms = [setup.stream.publish(setup.message(), TIMESTAMP) for _ in range(3)]
        assert not any(confirm.done() for confirm in confirms)
        started = asyncio.get_running_loop().time()
        await proxy.cut()
        for confirm in confirms:
            with pytest.raises((AMQPError, ConnectionError)):  # what publisher reads as 503
                await asyncio.wait_for(confirm, 5)
        assert asyncio.get_running_loop().time() - started < 5.0
    finally:
        proxy.resume()
        await proxy.restore()
        await setup.connection.close()


async def test_a_closed_channel_refuses_to_publish(publishing: Publishing) -> None:
    """After the channel closes, publish raises instead of writing to a dead channel."""
    await publishing.stream.channel.close()
    assert not publishing.stream.usable
    with pytest.raises(ConnectionError):
        publishing.stream.publish(publishing.message(), TIMESTAMP)


async def test_tracker_keeps_the_newest_stream(proxy: TcpProxy) -> None:
    """After a reconnect the tracker hands out the new connection's stream, not the dead one."""
    streams = StreamTracker()
    connection = await connect_robust(
        [proxy.url_for(AMQP_URL)],
        connect_timeout_s=10,
        transport_factory=streams,
        reconnect_interval=0.1,
    )
    try:
        first = streams.writer
        assert first is not None
        reconnected = asyncio.Event()
        connection.reconnect_callbacks.add(lambda *_: reconnected.set())
        await proxy.cut()
        await proxy.restore()
        await asyncio.wait_for(reconnected.wait(), 10)
        assert streams.writer is not None
        assert streams.writer is not first
        assert first.is_closing()
    finally:
        await connection.close()


async def test_requests_racing_after_a_channel_loss_share_one_stream(
    make_ingress: IngressFactory,
) -> None:
    """Requests that find the stream unusable at once all get the same new stream: two streams
    on one channel could write frames out of delivery-tag order."""
    ingress = await make_ingress()
    publisher = ingress.client.app[PUBLISHER]
    assert isinstance(publisher, Publisher)
    first = await publisher._open_stream()
    await first.channel.close()
    robust = publisher._channel
    assert robust is not None

    async def reopened() -> bool:
        channel = await robust.get_underlay_channel()
        return channel is not first.channel and not channel.is_closed

    await eventually(reopened, 10, "the robust channel to reopen")
    opened = await asyncio.gather(*(publisher._open_stream() for _ in range(8)))
    assert {id(stream) for stream in opened} == {id(opened[0])}
    assert opened[0] is not first
    assert opened[0].usable
