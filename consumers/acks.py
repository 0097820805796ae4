"""Acknowledging a batch of deliveries with as few ``basic.ack`` frames as is safe.

``ack(multiple=True)`` on delivery tag ``n`` settles every unsettled delivery of the channel
up to ``n``, including ones this worker has not seen yet or is still working on. So the
tracker remembers, per channel, every tag it has settled: ``floor`` (all tags up to it are
settled) and the settled tags above it. A batch is acked with ``multiple`` up to the
highest tag ``m`` such that every tag from ``floor + 1`` to ``m`` is in the batch or already
settled; the rest of the batch is acked one by one. RabbitMQ numbers a channel's deliveries
1, 2, 3, ...; were there gaps, the floor would stop at one and every ack would be single.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

from aio_pika.abc import AbstractIncomingMessage


class _Channel:
    __slots__ = ("floor", "settled")

    def __init__(self) -> None:
        self.floor = 0
        self.settled: set[int] = set()

    def add(self, tag: int) -> None:
        if tag <= self.floor:
            return
        self.settled.add(tag)
        while self.floor + 1 in self.settled:
            self.floor += 1
            self.settled.discard(self.floor)


class AckTracker:
    """The settled delivery tags of each channel a worker's messages came on."""

    def __init__(self) -> None:
        self._channels: weakref.WeakKeyDictionary[object, _Channel] = weakref.WeakKeyDictionary()

    def _state(self, message: AbstractIncomingMessage) -> _Channel | None:
        try:
            channel = message.channel  # raises once the channel is closed
        except Exception:
            return None
        state = self._channels.get(channel)
        if state is None:
            state = self._channels[channel] = _Channel()
        return state

    def settled(self, message: AbstractIncomingMessage) -> None:
        """Record that ``message`` was acked, nacked or rejected (the frame is sent)."""
        state = self._state(message)
        if state is not None and message.delivery_tag is not None:
            state.add(message.delivery_tag)

    def plan(
        self, messages: Sequence[AbstractIncomingMessage]
    ) -> tuple[AbstractIncomingMessage | None, list[AbstractIncomingMessage]]:
        """How to ack ``messages`` (unsettled, from one batch): the one to ack with
        ``multiple=True`` (or None) and the ones to ack alone."""
        state = self._state(messages[0]) if messages else None
        tags = {message.delivery_tag for message in messages}
        if state is None or None in tags or len(tags) != len(messages):
            return None, list(messages)
        try:
            channel = messages[0].channel
            if any(message.channel is not channel for message in messages):
                return None, list(messages)
        except Exception:
            return None, list(messages)
        top = state.floor
        while top + 1 in tags or top + 1 in state.settled:
            top += 1
        by_tag = {message.delivery_tag: message for message in messages}
        covered = [tag for tag in by_tag if tag is not None and tag <= top]
        if len(covered) < 2:
            return None, list(messages)
        last = max(covered)
        return by_tag[last], [m for t, m in by_tag.items() if t is not None and t > last]
