"""The built-in SMS handler: Notify delivery receipts and inbound texts."""

from __future__ import annotations

from typing import Any

import pytest

from consumers import Unprocessable
from consumers.handlers import sms
from consumers.state import StateStore
from tests.worker_support import apply_events, notify_inbound, notify_status

CREATED, DONE = "2017-05-14T12:15:30.000000Z", "2017-05-14T12:16:00.000000Z"


async def handle(store: StateStore, *events: dict[str, Any]) -> None:
    await apply_events(sms.make_handler(store), *events)


async def test_receipts_build_history_in_time_order(store: StateStore) -> None:
    """Receipts arriving late and twice give one history entry per status, oldest first."""
    delivered = notify_status("m-1", "delivered", CREATED, DONE)
    sending = notify_status("m-1", "sending", CREATED, None)
    await handle(store, delivered, sending, delivered)
    found = await store.message("m-1")
    assert found is not None
    assert (found["status"], found["notification_type"]) == ("delivered", "sms")
    assert [entry["status"] for entry in found["history"]] == ["sending", "delivered"]


async def test_inbound_sms_is_kept_without_printing_text(store: StateStore) -> None:
    """An inbound SMS is stored; the state view has numbers and time, not the text."""
    event = notify_inbound()
    await handle(store, event)
    found = await store.inbound(event["data"]["id"])
    assert found is not None
    assert found["source_number"] == "+61412987654"
    assert "message" not in found


async def test_inbound_time_falls_back_to_event_time(store: StateStore) -> None:
    """Without date_received the event's time is the received time."""
    event = notify_inbound()
    del event["data"]["date_received"]
    event["time"] = "2020-02-02T02:02:02Z"
    await handle(store, event)
    assert (await store.inbound(event["data"]["id"]) or {})["received_time"] == (
        "2020-02-02T02:02:02.000Z"
    )


@pytest.mark.parametrize("missing", ["id", "status", "notification_type"])
async def test_receipt_missing_a_field_is_unprocessable(store: StateStore, missing: str) -> None:
    """A receipt without id, status or notification_type cannot be recorded."""
    event = notify_status("m-1", "delivered", CREATED, DONE)
    del event["data"][missing]
    with pytest.raises(Unprocessable, match=missing):
        await handle(store, event)


async def test_other_notify_types_are_acknowledged_without_change(store: StateStore) -> None:
    """An SMS-queue event of another type changes nothing."""
    event = notify_status("m-1", "delivered", CREATED, DONE)
    event["type"] = "notify.sms.complaint"
    await handle(store, event)
    assert await store.message("m-1") is None
