"""Custom handlers the CLI tests load with ``--handler tests.custom_handler:<name>``.

They report to the file named by ``$CUSTOM_HANDLER_LOG``, one line per call.
"""

from __future__ import annotations

import asyncio
import os

from consumers import Event
from consumers.handlers import sms
from consumers.state import open_store
from consumers.worker import Handler

NOT_CALLABLE = 42


def _note(line: str) -> None:
    with open(os.environ["CUSTOM_HANDLER_LOG"], "a", encoding="utf-8") as log:
        log.write(line + "\n")


async def record(event: Event) -> None:
    """Write ``<id> <type>``."""
    _note(f"{event.id} {event.type}")


async def slow(event: Event) -> None:
    """Write ``start <id>``, work for a while, write ``done <id>``."""
    _note(f"start {event.id}")
    await asyncio.sleep(float(os.environ.get("CUSTOM_HANDLER_SECONDS", "0.3")))
    _note(f"done {event.id}")


def not_async(event: Event) -> None:
    """Not async: the loader refuses it."""


class CounterHandler:
    """An object with ``async __call__`` is a handler too."""

    def __init__(self) -> None:
        self.count = 0

    async def __call__(self, event: Event) -> None:
        self.count += 1


COUNTER = CounterHandler()


_SMS: list[Handler] = []


async def slow_sms(event: Event) -> None:
    """The built-in SMS handler on ``$CUSTOM_HANDLER_STATE``, slowed down; writes ``done <id>``."""
    if not _SMS:
        store = await open_store(os.environ["CUSTOM_HANDLER_STATE"])
        _SMS.append(sms.make_handler(store))
    await asyncio.sleep(float(os.environ.get("CUSTOM_HANDLER_SECONDS", "0.05")))
    await _SMS[0](event)
    _note(f"done {event.id}")
