"""The ``notify-delivery-status`` adapter: Notify delivery receipts (email and SMS), and
GOV.UK Notify's complaint and returned-letter callbacks, which come to the same door.

One notification sends one callback per status, so a receipt's id is ``"{id}:{status}"``:
the same receipt resent keeps its id, a new status gets a new one. A complaint
(``complaint_id`` present) is ``notify.email.complaint`` with id ``complaint_id`` and time
``complaint_date``; a returned letter (``notification_id`` without ``complaint_id``) is
``notify.letter.returned`` with id ``"{notification_id}:returned"`` and the receive time
(its ``date_sent`` is when the letter went out, not when it came back). Every kind has
``subject`` = ``partitionkey`` = the Notify notification id. The body becomes ``data``
unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

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
COMPLAINT = "notify.email.complaint"
RETURNED_LETTER = "notify.letter.returned"


def normalize(headers: Mapping[str, str], body: bytes, ctx: Context) -> list[CloudEvent]:
    """Turn one Notify delivery receipt, complaint or returned letter into one event."""
    require_json(headers)
    receipt = load_object(body)
    if "complaint_id" in receipt:
        return [_complaint(receipt, ctx)]
    if "notification_id" in receipt and "id" not in receipt:
        return [_returned_letter(receipt, ctx)]
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


def _complaint(body: dict[str, Any], ctx: Context) -> CloudEvent:
    notification_id = require_text(body, "notification_id")
    event: CloudEvent = {
        "specversion": SPECVERSION,
        "id": check_id(require_text(body, "complaint_id"), "complaint_id"),
        "source": ctx.callback_source,
        "type": COMPLAINT,
        "subject": notification_id,
        "time": check_time(body.get("complaint_date"), "complaint_date"),
    }
    return _finish(event, notification_id, body, ctx)


def _returned_letter(body: dict[str, Any], ctx: Context) -> CloudEvent:
    notification_id = require_text(body, "notification_id")
    event: CloudEvent = {
        "specversion": SPECVERSION,
        "id": check_id(f"{notification_id}:returned", "notification_id"),
        "source": ctx.callback_source,
        "type": RETURNED_LETTER,
        "subject": notification_id,
        "time": ctx.received,
    }
    return _finish(event, notification_id, body, ctx)


def _finish(event: CloudEvent, key: str, body: dict[str, Any], ctx: Context) -> CloudEvent:
    event["datacontenttype"] = JSON
    event["partitionkey"] = key
    stamp(event, ctx)
    event["data"] = body
    return event
