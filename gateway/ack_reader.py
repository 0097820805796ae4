"""Publisher confirms of the fast publish channel, read straight from the connection's bytes.

aiormq reads every frame with three awaited reads under a lock, decodes it into a pamqp object
and queues it to the channel's reader task, which for a ``multiple`` ack schedules one callback
per confirmed delivery tag. The broker's ``basic.ack`` and ``basic.nack`` all have one 21-byte
shape, so ``AckReader`` sits in front of aiormq's ``StreamReader.feed_data``: it walks the frame
boundaries of what arrives, takes the confirms of the channels registered with it and hands
each confirmed delivery tag (every pending one up to the acknowledged tag for ``multiple=true``)
to aiormq's own per-tag step (``Channel._confirm_delivery``: the future's result, a nack's
``DeliveryError``), and hands every other byte to aiormq unchanged and in order. Skipped: the
frame reads, the pamqp decoding, the queue to the channel's task and a callback per tag.

Fenced like the rest of the fast path (``gateway.fast_path_check``'s probe goes through it):

- bytes that are not AMQP frames (the protocol header a broker answers a refused version with,
  an unknown frame type), or any error of its own, and it passes everything through from then
  on, handing over what it held;
- a registered channel that has closed is forgotten (its number may be reused), and the frame
  goes to aiormq;
- while only confirms arrive, aiormq gets a heartbeat frame at least every ``KEEPALIVE_S``, so
  its dead-connection check still sees traffic.
"""

from __future__ import annotations

import asyncio
import struct
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from pamqp import commands

_FRAME_KINDS = frozenset({1, 2, 3, 8})  # method, content header, body, heartbeat
_FRAME_METHOD = 1
_FRAME_END = 0xCE
_CONFIRM_SIZE = 13  # class and method (4), delivery tag (8), flags (1)
_BASIC = 60
_ACK = 80
_NACK = 120
_HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"
KEEPALIVE_S = 1.0
_frame_head = struct.Struct(">BHI").unpack_from
_confirm_body = struct.Struct(">HHQB").unpack_from

# The reader of each connection the publisher opened, by its writer (``ConfirmStream`` looks
# its own up to register its channel).
READERS: weakref.WeakKeyDictionary[asyncio.StreamWriter, AckReader] = weakref.WeakKeyDictionary()


class AckReader:
    """Resolves the confirms of registered channels from one connection's incoming bytes."""

    def __init__(
        self, forward: Callable[[bytes], None], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._forward = forward
        self._clock = clock
        self._held = b""  # the start of a frame that has not arrived whole
        self._channels: dict[int, Any] = {}
        self._passthrough = False
        self._forwarded_at = clock()
        self.resolved = 0  # confirms resolved here

    @classmethod
    def attach(cls, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> AckReader:
        """Put a reader in front of ``reader.feed_data`` (where the protocol delivers bytes)."""
        acks = cls(reader.feed_data)
        reader.feed_data = acks.feed_data  # type: ignore[method-assign,assignment]
        READERS[writer] = acks
        return acks

    @property
    def passthrough(self) -> bool:
        """True once it gave up: every byte goes to aiormq as it arrives."""
        return self._passthrough

    def register(self, channel: Any) -> bool:
        """Read the confirms of ``channel`` (an aiormq ``Channel`` in confirm mode) here; False
        (aiormq keeps reading them) when it lacks what this uses."""
        if not (
            callable(getattr(channel, "_confirm_delivery", None))
            and isinstance(getattr(channel, "confirmations", None), Mapping)
            and isinstance(getattr(channel, "number", None), int)
        ):
            return False
        self._channels[channel.number] = channel
        return True

    def feed_data(self, data: bytes) -> None:
        if self._passthrough:
            self._forward(data)
            return
        try:
            forward, confirms = self._scan(data)
        except Exception:  # the fence: never lose or reorder a byte for aiormq
            self._give_up(data)
            return
        try:
            for confirm in confirms:
                self._confirm(*confirm)
        except Exception:  # the fence: aiormq reads everything from now on
            self._passthrough = True
            held, self._held = self._held, b""
            forward += held
        if forward:
            self._forward(forward)
            self._forwarded_at = self._clock()
        elif confirms and self._clock() - self._forwarded_at >= KEEPALIVE_S:
            self._forward(_HEARTBEAT)
            self._forwarded_at = self._clock()

    def _give_up(self, data: bytes) -> None:
        self._passthrough = True
        held, self._held = self._held, b""
        self._forward(held + data)

    def _scan(self, data: bytes) -> tuple[bytes, list[tuple[Any, int, int, int]]]:
        """The bytes for aiormq and the confirms for us in ``data`` (plus what was held).
        Changes nothing but the held bytes and the registered channels."""
        buffer = self._held + data if self._held else data
        size_of = len(buffer)
        position = start = 0
        kept: list[bytes] = []
        confirms: list[tuple[Any, int, int, int]] = []
        while size_of - position >= 8:
            kind, number, size = _frame_head(buffer, position)
            if kind not in _FRAME_KINDS:
                raise ValueError("not an AMQP frame")
            end = position + 8 + size
            if end > size_of:
                break
            if kind == _FRAME_METHOD and size == _CONFIRM_SIZE and number in self._channels:
                class_id, method, tag, flags = _confirm_body(buffer, position + 7)
                if class_id == _BASIC and method in (_ACK, _NACK) and buffer[end - 1] == _FRAME_END:
                    channel = self._channels[number]
                    if channel.is_closed:
                        del self._channels[number]
                    else:
                        if position > start:
                            kept.append(buffer[start:position])
                        confirms.append((channel, method, tag, flags))
                        start = end
            position = end
        if position > start:
            kept.append(buffer[start:position])
        self._held = buffer[position:]
        return b"".join(kept), confirms

    def _confirm(self, channel: Any, method: int, tag: int, flags: int) -> None:
        """Hand delivery ``tag`` (and every earlier pending one for ``multiple``) to aiormq's
        own per-tag step, as its reader task would: the futures, returned messages and
        nacks stay aiormq's business."""
        multiple = bool(flags & 1)
        frame: Any
        if method == _ACK:
            frame = commands.Basic.Ack(delivery_tag=tag, multiple=multiple)
        else:
            requeue = bool(flags & 2)
            frame = commands.Basic.Nack(delivery_tag=tag, multiple=multiple, requeue=requeue)
        tags = (
            [pending for pending in channel.confirmations if pending <= tag] if multiple else [tag]
        )
        confirm = channel._confirm_delivery
        for pending in tags:
            confirm(pending, frame)
        self.resolved += len(tags)
