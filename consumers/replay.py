"""Moving messages out of a queue: confirm first, then ack, many moves in flight.

Errors:
    ReplayBroken: copies were confirmed but their originals could not be acked.

A ``Planner`` (pure: one message in, a ``Plan`` out) says where each message's new copies go
and whether that counts as replayed (it reached its destination) or failed (it stays: its
copy goes back to the end of its own queue, e.g. a rejected request with its new reason).
``replay`` publishes every copy on a confirm-mode channel and acks the original only once the
broker confirmed all its copies; a nack, a return or a timeout leaves the original in its
queue and counts it as failed. Up to a consume window of moves are in flight at once, so the
rate is set by the broker, not by one round trip per message.

When ``stop`` is set (Ctrl-C), no new move starts; the ones in flight finish (confirmed copies
get their ack, within the publish timeout), everything else goes back to its queue when the
channel closes: no message ends up in both queues, none in neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from aiormq.abc import AbstractConnection, DeliveredMessage
from aiormq.channel import Channel
from aiormq.exceptions import AMQPError, ChannelInvalidStateError
from pamqp import commands

from consumers.queue_reader import WINDOW, reading

_BROKER_ERRORS = (AMQPError, ChannelInvalidStateError, ConnectionError, OSError, TimeoutError)


class ReplayBroken(Exception):
    """Copies were confirmed but their originals could not be acked (the channel closed)."""


@dataclass(frozen=True, slots=True)
class Copy:
    """One message to publish for a move."""

    exchange: str
    routing_key: str
    body: bytes
    properties: commands.Basic.Properties
    mandatory: bool = False  # a return (no queue took it) fails the move


@dataclass(frozen=True, slots=True)
class Plan:
    """What happens to one message: its new copies, and whether that counts as replayed."""

    copies: tuple[Copy, ...]
    moves: bool
    detail: dict[str, Any] = field(default_factory=dict)  # what --dry-run says about it


Planner = Callable[[DeliveredMessage], Plan]


@dataclass(slots=True)
class Summary:
    """The line every replay ends with."""

    replayed: int = 0
    failed: int = 0

    def as_json(self) -> dict[str, int]:
        return {"replayed": self.replayed, "failed": self.failed}


async def replay(
    connection: AbstractConnection,
    queue: str,
    planner: Planner,
    *,
    publish_timeout_s: float,
    stop: asyncio.Event,
    limit: int | None = None,
    wanted: Callable[[DeliveredMessage], bool] | None = None,
    progress: Callable[[int], None] = lambda _: None,
    window: int = WINDOW,
    summary: Summary | None = None,
    hurry: asyncio.Event | None = None,
) -> Summary:
    """Move the messages of ``queue`` (those ``wanted``, at most ``limit``) as ``planner``
    says; the others stay where they are. See the module docstring. ``summary`` (counted
    into as moves finish) lets the caller report a run that ended in an error."""
    summary = Summary() if summary is None else summary
    # The concrete aiormq channel: its basic_publish takes ``wait`` (the abstract one not).
    publish = cast(Channel, await connection.channel(publisher_confirms=True))
    moving: set[asyncio.Task[None]] = set()
    mandatory_ids: dict[str, asyncio.Task[None]] = {}
    unsettled: list[BaseException] = []
    try:
        async with reading(connection, queue, window=window, hurry=hurry) as reader:

            async def move(
                message: DeliveredMessage, plan: Plan, after: asyncio.Task[None] | None
            ) -> None:
                if after is not None:
                    # aiormq matches a return to its publish by message id: one such publish
                    # per id in flight, or a return could fail the wrong move.
                    await asyncio.wait({after})
                if await _confirmed(publish, plan.copies, publish_timeout_s):
                    try:
                        await reader.settle(message)
                    except _BROKER_ERRORS as exc:  # the copy is in; the original comes back
                        unsettled.append(exc)
                        return
                    if plan.moves:
                        summary.replayed += 1
                    else:
                        summary.failed += 1
                else:
                    summary.failed += 1
                progress(1)

            started = 0
            stopping = asyncio.ensure_future(stop.wait())
            while not stop.is_set() and (limit is None or started < limit):
                next_message = asyncio.ensure_future(reader.next(busy=lambda: bool(moving)))
                await asyncio.wait({next_message, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not next_message.done():
                    next_message.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await next_message
                    break
                message = next_message.result()
                if message is None:
                    break
                if wanted is not None and not wanted(message):
                    continue  # left unacked: handed back in its place at the end
                started += 1
                plan = planner(message)
                key = message.header.properties.message_id
                if not any(copy.mandatory for copy in plan.copies):
                    key = None
                task = asyncio.create_task(move(message, plan, mandatory_ids.get(key or "")))
                moving.add(task)
                task.add_done_callback(moving.discard)
                if key:
                    mandatory_ids[key] = task
                    task.add_done_callback(functools.partial(_forget, mandatory_ids, key))
            stopping.cancel()
            if moving:
                await asyncio.wait(moving)
        if unsettled:
            raise ReplayBroken(
                f"the broker connection failed during the replay ({unsettled[0]}): "
                f"{len(unsettled)} messages were copied but not acked and may be in both queues"
            )
    finally:
        for task in moving:
            task.cancel()
        with contextlib.suppress(*_BROKER_ERRORS):
            await publish.close()
    return summary


def _forget(tasks: dict[str, asyncio.Task[None]], key: str, task: asyncio.Task[None]) -> None:
    if tasks.get(key) is task:
        del tasks[key]


async def _confirmed(channel: Channel, copies: tuple[Copy, ...], timeout_s: float) -> bool:
    """Publish every copy; True only when the broker confirmed each (no nack, no return)."""
    if not copies:
        return False
    try:
        results = await asyncio.gather(
            *(
                channel.basic_publish(
                    copy.body,
                    exchange=copy.exchange,
                    routing_key=copy.routing_key,
                    properties=copy.properties,
                    mandatory=copy.mandatory,
                    timeout=timeout_s,
                    wait=False,  # no socket drain per message: the confirm is what counts
                )
                for copy in copies
            ),
            return_exceptions=True,
        )
    except _BROKER_ERRORS:
        return False
    return all(isinstance(result, commands.Basic.Ack) for result in results)
