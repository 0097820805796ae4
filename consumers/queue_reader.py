"""Reading a queue in consume windows without losing its order: for listing and for replays.

``QueueReader`` reads at most the messages the queue held when it started (``target``: the
ready count then), so messages published meanwhile, a replay's own copies included, are not
read; it also ends when the queue runs dry before that.

The caller acks a message (``settle``) or leaves it (listing leaves every message). A consumer
that holds its whole prefetch window gets nothing more, and a message handed back at once
would come straight back (RabbitMQ returns it to the head of the queue), so when a window is
held the reader cancels that consumer and starts another on the same channel: the new one gets
the messages after the held ones. Each consumer's ``basic.qos`` is at most what is still
wanted, and an ack that would let the broker send past ``target`` is held back until its
consumer is cancelled, so the reader never takes a message it would have to hand back out of
turn.

At the end the messages left are handed back by closing the channel, not by ``nack``. What
RabbitMQ 3.10's quorum queues do with a message handed back (measured, see
``tests/test_replay.py``): a nacked one goes to the back of the queue; those of a closed
channel go back in front of the messages never delivered, each consumer's in order, the
consumers in the order of their tags (hash order past 32 of them), but behind messages that
were handed back before. So a reader that stopped early (``--limit``, ``| head``, Ctrl-C, a
replay's leftovers) first reads on to its ``target`` without handing anything out, then closes
the channel with the whole queue in hand; it opens at most ``MAX_WINDOWS`` windows, tagged to
sort in the order they were opened. Then the queue keeps its order, however often it is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage
from aiormq.exceptions import ChannelInvalidStateError
from pamqp import commands

from consumers.tool_connection import ready_messages

WINDOW = 512
IDLE_S = 0.25  # no delivery for this long: ask the broker whether anything is left
MAX_WINDOWS = 30
MAX_PREFETCH = 65535  # basic.qos prefetch-count is 16 bits
SETTLE_S = 5.0
ACK_GRACE_S = 0.5  # how long to wait for the broker to count handed-back messages as ready


@dataclass(slots=True)
class _Window:
    """One consumer: its credit, what it delivered, and what of that is still unacked."""

    tag: str
    credit: int
    unacked: int = 0
    last_tag: int = 0
    deferred: list[int] = field(default_factory=list)
    cancelled: bool = False


class QueueReader:
    """Consumes ``queue`` on ``channel`` in windows; see the module docstring."""

    def __init__(
        self,
        connection: AbstractConnection,
        channel: AbstractChannel,
        queue: str,
        target: int,
        window: int = WINDOW,
    ) -> None:
        self._connection = connection
        self._channel = channel
        self._queue = queue
        self.target = target
        self._window = _window_size(target, window)
        self._run = uuid.uuid4().hex[:12]
        self._inbox: asyncio.Queue[DeliveredMessage] = asyncio.Queue()
        self._windows: list[_Window] = []
        self._by_tag: dict[str, _Window] = {}
        self.received = 0
        self.acked = 0
        self._dry = False
        self._open: dict[int, None] = {}  # delivered, not acked: delivery tags, oldest first
        self._pending_acks: list[int] = []
        self._flush_scheduled = False
        self._flushing: set[asyncio.Future[None]] = set()
        self._ack_lock = asyncio.Lock()

    async def _open_window(self) -> bool:
        credit = min(self._window, self.target - self.received)
        if credit <= 0:
            return False
        await self._channel.basic_qos(prefetch_count=credit)
        consumed = await self._channel.basic_consume(
            self._queue,
            self._deliver,
            # Tags that sort in the order the windows were opened (see _window_size).
            consumer_tag=f"event-gateway-{len(self._windows):06d}-{self._run}",
        )
        assert consumed.consumer_tag is not None
        window = _Window(consumed.consumer_tag, credit)
        self._windows.append(window)
        self._by_tag[window.tag] = window
        return True

    async def _deliver(self, message: DeliveredMessage) -> None:
        self._inbox.put_nowait(message)

    async def _cancel_current(self) -> None:
        if self._windows and not self._windows[-1].cancelled:
            current = self._windows[-1]
            current.cancelled = True
            await self._channel.basic_cancel(current.tag)
            # Its acks no longer bring anything: send the ones held back.
            self._pending_acks += current.deferred
            self.acked += len(current.deferred)
            current.unacked -= len(current.deferred)
            current.deferred.clear()
            await self._flush_acks()

    async def next(self, busy: Callable[[], bool] = lambda: False) -> DeliveredMessage | None:
        """The next message, or None when ``target`` were read or the queue ran dry.
        ``busy()``: the caller will still settle some messages it has (so wait for that
        rather than open a new window)."""
        if self.received >= self.target or self._dry:
            return None
        if not self._windows and not await self._open_window():
            return None
        while True:
            try:
                message = await asyncio.wait_for(self._inbox.get(), IDLE_S)
            except TimeoutError:
                if self._channel.is_closed:  # nothing will come: say so instead of waiting
                    closed = f"the channel reading {self._queue} closed"
                    raise ChannelInvalidStateError(closed) from None
                current = self._windows[-1]
                if current.unacked >= current.credit and not busy():
                    await self._cancel_current()
                    if self._inbox.empty() and not await self._open_window():
                        return None
                    continue
                ready = await ready_messages(self._connection, self._queue)
                if ready == 0 and self._inbox.empty():
                    self._dry = True
                    return None
                continue
            window = self._by_tag[_consumer(message)]
            window.unacked += 1
            window.last_tag = _tag(message)
            self._open[window.last_tag] = None
            self.received += 1
            if (
                window is self._windows[-1]
                and not window.cancelled
                and window.unacked >= window.credit
                and self.received < self.target
                and not busy()
            ):
                # A listing holds everything: move on to the next window right away.
                await self._cancel_current()
                await self._open_window()
            return message

    async def settle(self, message: DeliveredMessage) -> None:
        """Ack ``message`` (its new copy is confirmed)."""
        tag = _tag(message)
        window = self._by_tag[_consumer(message)]
        # After this ack the consumer may be sent (credit - unacked + 1) more: only within target.
        if window.cancelled or window.credit - (window.unacked - 1) <= (
            self.target - self.received
        ):
            window.unacked -= 1
            self.acked += 1
            self._pending_acks.append(tag)
            if not self._flush_scheduled:
                # One flush per turn of the event loop: the acks settled meanwhile go together.
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._schedule_flush)
        else:
            window.deferred.append(tag)

    def _schedule_flush(self) -> None:
        task = asyncio.ensure_future(self._flush_acks())
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _flush_acks(self) -> None:
        """Send the acks settled so far: one ``ack(multiple)`` when they are exactly the oldest
        messages still unacked on the channel (never one held back, kept or unsettled),
        else one each. One flush at a time: a later ``ack(multiple)`` overtaking an earlier
        one (while aiormq's write queue is full) would ack its messages first, and the
        broker closes the channel on the earlier one's tag, unknown by then."""
        async with self._ack_lock:
            self._flush_scheduled = False
            pending, self._pending_acks = sorted(self._pending_acks), []
            if not pending or self._channel.is_closed:
                return
            oldest = iter(self._open)
            together = all(next(oldest, None) == tag for tag in pending)
            for tag in pending:
                del self._open[tag]
            if together and len(pending) > 1:
                await self._channel.basic_ack(pending[-1], multiple=True, wait=False)
                return
            for tag in pending:
                await self._channel.basic_ack(tag, wait=False)

    async def finish(self) -> int:
        """Stop consuming and send the acks held back; returns how many messages are still
        held (closing the channel hands them back, see the module docstring)."""
        with contextlib.suppress(Exception):
            await self._cancel_current()
            if self._flushing:
                await asyncio.wait(self._flushing)
            await self._flush_acks()
            if self.acked:
                # The channel has read every ack once this round trip is back; the quorum
                # queue applies them a little later, and a close that overtakes them returns
                # those messages to the queue (measured: 10-165 of 3,000 acks sent just before
                # the close). So the close waits a moment.
                await self._channel.basic_qos(prefetch_count=1)
                await asyncio.sleep(ACK_GRACE_S)
        return sum(window.unacked for window in self._windows)


def _window_size(target: int, window: int) -> int:
    """``window``, or more for a queue that would need over ``MAX_WINDOWS`` of them.

    A quorum queue returns the messages of a closed channel consumer by consumer in the order
    of their keys, which is hash order past 32 consumers: with at most ``MAX_WINDOWS``, tagged
    to sort in the order they were opened, the queue keeps its order (``tests/test_replay.py``
    lists 20,000 messages twice and compares).
    """
    return min(MAX_PREFETCH, max(1, window, -(-target // MAX_WINDOWS)))


def _consumer(message: DeliveredMessage) -> str:
    delivery = message.delivery
    assert isinstance(delivery, commands.Basic.Deliver)
    assert delivery.consumer_tag is not None
    return delivery.consumer_tag


def _tag(message: DeliveredMessage) -> int:
    tag = message.delivery_tag
    assert tag is not None
    return tag


@contextlib.asynccontextmanager
async def reading(
    connection: AbstractConnection,
    queue: str,
    target: int | None = None,
    window: int = WINDOW,
    hurry: asyncio.Event | None = None,
) -> AsyncIterator[QueueReader]:
    """A ``QueueReader`` on a channel of its own; ``target`` defaults to the ready count.
    Once ``hurry`` is set, what is left is handed back without reading on (faster, but the
    messages handed back may lose their place)."""
    ready_at_start = await ready_messages(connection, queue)
    if target is None:
        target = ready_at_start
    channel = await connection.channel()
    reader = QueueReader(connection, channel, queue, target, window)
    try:
        yield reader
    finally:
        with contextlib.suppress(Exception):  # a closed channel returns them by itself
            # Read to the end first: only a whole queue handed back keeps its order.
            while not (hurry is not None and hurry.is_set()) and await reader.next() is not None:
                pass
            handed_back = await reader.finish()
            await channel.close()
            if handed_back:
                await _settled(connection, queue, ready_at_start - reader.acked)


async def _settled(connection: AbstractConnection, queue: str, expected: int) -> None:
    """Wait (a little) until the queue counts the messages handed back as ready again: a
    quorum queue applies them after the close returns, and a command run right after this
    one must find the queue as it was, in its order."""
    deadline = asyncio.get_running_loop().time() + SETTLE_S
    while asyncio.get_running_loop().time() < deadline:
        if await ready_messages(connection, queue) >= expected:
            return
        await asyncio.sleep(0.02)
