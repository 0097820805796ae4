"""The ``notify-inbound-sms`` adapter: text messages Notify received for the service.

The event id is Notify's message id (one callback per message); ``partitionkey`` is the
sender's number, in E.164 with its ``+`` when GOV.UK sent it without (``447700912345``) or
as a JSON number. The body becomes ``data`` unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.adapters.context import Context
from gateway.adapters.envelope import check_id, check_time, load_object, require_text, stamp
from gateway.adapters.media import JSON, require_json
from gateway.adapters.partition import phone_key
from gateway.cloudevent import SPECVERSION, CloudEvent

TYPE = "notify.sms.inbound"


def normalize(headers: Mapping[str, str], body: bytes, ctx: Context) -> list[CloudEvent]:
    """Turn one Notify inbound-SMS callback into one event."""
    require_json(headers)
    message = load_object(body)
    message_id = check_id(require_text(message, "id"), "id")
    event: CloudEvent = {
        "specversion": SPECVERSION,
        "id": message_id,
        "source": ctx.callback_source,
        "type": TYPE,
        "subject": message_id,
    }
    date_received = message.get("date_received")
    if date_received is not None:
        event["time"] = check_time(date_received, "date_received")
    event["datacontenttype"] = JSON
    source_number = phone_key(message.get("source_number"))
    if source_number is not None:
        event["partitionkey"] = source_number
    stamp(event, ctx)
    event["data"] = message
    return [event]
