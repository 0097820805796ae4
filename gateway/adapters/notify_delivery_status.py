"""The ``notify-delivery-status`` adapter: Notify delivery receipts (email and SMS).

One notification sends one callback per status, so the event id is ``"{id}:{status}"``:
the same receipt resent keeps its id, a new status gets a new one. The body becomes ``data``
unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from gateway.adapters.context import Context
from gateway.adapters.envelope import (
    check_id,
    check_time,
    check_type,
    load_object,
    require_text,
    stamp,
)
from gateway.adapters.errors import BadRequest
from gateway.adapters.media import JSON, require_json
from gateway.cloudevent import SPECVERSION, CloudEvent

_NOTIFICATION_TYPE = re.compile(r"[a-z][a-z0-9-]*")


def normalize(headers: Mapping[str, str], body: bytes, ctx: Context) -> list[CloudEvent]:
    """Turn one Notify delivery receipt into one event."""
    require_json(headers)
    receipt = load_object(body)
    notification_id = require_text(receipt, "id")
    status = require_text(receipt, "status")
    notification_type = require_text(receipt, "notification_type")
    if not _NOTIFICATION_TYPE.fullmatch(notification_type):
        raise BadRequest(
            "notification_type must be lower-case letters, digits and '-'",
            field="notification_type",
        )
    event: CloudEvent = {
        "specversion": SPECVERSION,
        "id": check_id(f"{notification_id}:{status}", "id"),
        "source": ctx.callback_source,
        "type": check_type(f"notify.{notification_type}.delivery-status", "notification_type"),
        "subject": notification_id,
    }
    completed_at = receipt.get("completed_at")
    if completed_at is not None:
        event["time"] = check_time(completed_at, "completed_at")
    else:
        created_at = receipt.get("created_at")
        if created_at is not None:
            event["time"] = check_time(created_at, "created_at")
    event["datacontenttype"] = JSON
    event["partitionkey"] = notification_id
    stamp(event, ctx)
    event["data"] = receipt
    return [event]
