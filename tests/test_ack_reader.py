"""Confirms read from the raw AMQP bytes: acks and nacks of a registered channel resolved
(``multiple`` included), every other byte handed to aiormq unchanged and in order, whatever
the chunking; anything unexpected and it passes everything through; and through a real
ingress and broker, the publishes are confirmed this way."""

from __future__ import annotations

import asyncio
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiormq.exceptions import DeliveryError

from gateway.ack_reader import KEEPALIVE_S, READERS, AckReader
from gateway.app import PUBLISHER
from tests.broker import drain
from tests.conftest import FIXTURES, Ingress

HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"


def frame(kind: int, channel: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"


def ack(channel: int, tag: int, multiple: bool = False) -> bytes:
    return frame(1, channel, struct.pack(">HHQB", 60, 80, tag, int(multiple)))


def nack(channel: int, tag: int) -> bytes:
    return frame(1, channel, struct.pack(">HHQB", 60, 120, tag, 2))


@dataclass
class FakeChannel:
    """What AckReader uses of an aiormq channel."""

    number: int
    is_closed: bool = False
    confirmations: OrderedDict[int, asyncio.Future[Any]] = field(default_factory=OrderedDict)

    def _confirm_delivery(self, delivery_tag: int, frame: Any) -> None:
        """aiormq's per-tag step (aiormq/channel.py), without its logging."""
        confirmation = self.confirmations.pop(delivery_tag, None)
        if confirmation is None or confirmation.done():
            return
        if frame.name == "Basic.Ack":
            confirmation.set_result(frame)
        else:
            confirmation.set_exception(DeliveryError(None, frame))

    def publish(self, tags: range) -> list[asyncio.Future[Any]]:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in tags]
        self.confirmations.update(zip(tags, futures, strict=True))
        return futures


class Sink:
    def __init__(self) -> None:
        self.data = b""

    def __call__(self, data: bytes) -> None:
        self.data += data


OTHER = (
    frame(1, 0, b"\x00\x0a\x00\x33" + b"x" * 30)  # a channel-0 method
    + ack(2, 7)  # a confirm of another channel: aiormq's
    + frame(2, 1, b"h" * 20)
    + frame(3, 1, b"b" * 100)
    + HEARTBEAT
)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 8, 13, 21, 64, 10_000])
async def test_confirms_resolved_and_other_bytes_forwarded_in_order(chunk: int) -> None:
    """Split anywhere: acks (single and multiple) and nacks of channel 1 are resolved, all the
    rest reaches aiormq byte for byte."""
    channel = FakeChannel(1)
    futures = channel.publish(range(1, 11))
    sink = Sink()
    reader = AckReader(sink)
    reader.register(channel)
    stream = OTHER + ack(1, 3, multiple=True) + OTHER + nack(1, 5) + ack(1, 4) + OTHER
    stream += ack(1, 9, multiple=True)
    for index in range(0, len(stream), chunk):
        reader.feed_data(stream[index : index + chunk])
    assert sink.data == OTHER * 3
    assert [f.result().delivery_tag for f in futures[:3]] == [3, 3, 3]
    assert futures[3].result().delivery_tag == 4
    with pytest.raises(DeliveryError):
        futures[4].result()
    assert all(f.done() and not f.cancelled() for f in futures[5:9])
    assert not futures[9].done()
    assert list(channel.confirmations) == [10]
    assert reader.resolved == 9


async def test_a_closed_channel_is_forgotten_and_its_frames_go_to_aiormq() -> None:
    """Once the registered channel is closed, its confirms are aiormq's again."""
    channel = FakeChannel(1)
    [future] = channel.publish(range(1, 2))
    sink = Sink()
    reader = AckReader(sink)
    reader.register(channel)
    channel.is_closed = True
    reader.feed_data(ack(1, 1) + ack(1, 2))
    assert sink.data == ack(1, 1) + ack(1, 2)
    assert not future.done()


async def test_bytes_that_are_not_frames_make_it_pass_everything_through() -> None:
    """Bytes that cannot start a frame after a held partial one: everything, the held bytes
    and the confirm they complete included, goes to aiormq, and so does every later byte."""
    channel = FakeChannel(1)
    [future] = channel.publish(range(1, 2))
    sink = Sink()
    reader = AckReader(sink)
    reader.register(channel)
    confirm = ack(1, 1)
    reader.feed_data(confirm[:10])
    assert sink.data == b""
    reader.feed_data(confirm[10:] + b"AMQP\x00\x00\x09\x01")
    assert reader.passthrough
    reader.feed_data(ack(1, 1))
    assert sink.data == confirm + b"AMQP\x00\x00\x09\x01" + ack(1, 1)
    assert not future.done()


async def test_a_refused_protocol_header_is_passed_through() -> None:
    """A broker refusing the protocol version answers with its header, not frames: aiormq
    gets it as it came."""
    sink = Sink()
    reader = AckReader(sink)
    reader.feed_data(b"AMQP\x00\x00\x09\x01")
    assert reader.passthrough
    assert sink.data == b"AMQP\x00\x00\x09\x01"


async def test_aiormq_gets_a_heartbeat_while_only_confirms_arrive() -> None:
    """Confirms alone for KEEPALIVE_S: aiormq receives one heartbeat frame (its dead-connection
    check counts frames), not one per confirm."""
    now = [0.0]
    channel = FakeChannel(1)
    channel.publish(range(1, 4))
    sink = Sink()
    reader = AckReader(sink, clock=lambda: now[0])
    reader.register(channel)
    reader.feed_data(ack(1, 1))
    assert sink.data == b""
    now[0] = KEEPALIVE_S
    reader.feed_data(ack(1, 2))
    reader.feed_data(ack(1, 3))
    assert sink.data == HEARTBEAT


async def test_the_ingress_publishes_are_confirmed_from_the_raw_stream(ingress: Ingress) -> None:
    """Through a real ingress and broker, 20 callbacks get 204, are on the queue, and their
    confirms were resolved by the connection's AckReader."""
    body = (FIXTURES / "camara-roaming-status.json").read_bytes()
    app = ingress.client.app
    assert app is not None
    publisher: Any = app[PUBLISHER]
    writer = publisher._streams.writer
    acks = READERS[writer]
    before = acks.resolved
    statuses = await asyncio.gather(
        *(ingress.post("camara", body, "application/cloudevents+json") for _ in range(20))
    )
    assert [status for status, _ in statuses] == [204] * 20
    assert len(await drain(ingress.channel, ingress.capture, 20)) == 20
    assert acks.resolved - before == 20
    assert not acks.passthrough
