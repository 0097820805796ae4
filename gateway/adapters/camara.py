"""The ``camara`` adapter: CAMARA / Network as Code notifications, in every shape seen.

* CloudEvents in any HTTP binding mode, as the ``cloudevents`` adapter reads them;
* a CloudEvent sent as ``application/json`` (CAMARA senders that ignore the media type);
* the Network as Code "hybrid" body: a CloudEvent that also carries the legacy
  ``eventSubscriptionId`` and ``event`` members, in whatever content type or batch it
  comes. The CloudEvents attributes win; a missing ``time`` or ``data`` is taken from
  ``event``; ``data`` without ``subscriptionId`` gets ``eventSubscriptionId`` as one (the
  workers find the subscription there); the legacy members are dropped;
* the pre-CloudEvents body ``{eventSubscriptionId, event: {eventId?, eventType, eventTime,
  eventDetail}}`` (device-status 2023, QoD v0.9), whose type comes from ``LEGACY_TYPES`` (the
  older Network as Code ``CONNECTIVITY`` / ``DEVICE_STATUS_CHANGED`` from
  ``eventDetail.deviceStatus``) and whose id, without ``eventId``, is a digest of the body, so
  a resent body keeps its id.

Every event's ``partitionkey`` is derived from its ``data`` (``gateway.adapters.partition``);
a sender's ``partitionkey`` that names another entity is refused (400 naming it). The CAMARA
``x-correlator`` request header becomes the extension attribute ``xcorrelator``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

import orjson

from gateway.adapters.cloudevents import check_partition_key, finish, read_cloudevents
from gateway.adapters.context import Context
from gateway.adapters.correlation import add_correlator
from gateway.adapters.envelope import check_id, check_time, load_object, validate_event
from gateway.adapters.errors import BadRequest
from gateway.adapters.media import BATCH, media_type
from gateway.cloudevent import SPECVERSION, CloudEvent

_DEVICE_STATUS = "org.camaraproject.device-status.v0."
LEGACY_TYPES: Final[Mapping[str, str]] = {
    "ROAMING_STATUS": _DEVICE_STATUS + "roaming-status",
    "ROAMING_ON": _DEVICE_STATUS + "roaming-on",
    "ROAMING_OFF": _DEVICE_STATUS + "roaming-off",
    "ROAMING_CHANGE_COUNTRY": _DEVICE_STATUS + "roaming-change-country",
    "SUBSCRIPTION_ENDS": _DEVICE_STATUS + "subscription-ends",
    "CONNECTIVITY_DATA": _DEVICE_STATUS + "connectivity-data",
    "CONNECTIVITY_SMS": _DEVICE_STATUS + "connectivity-sms",
    "CONNECTIVITY_DISCONNECTED": _DEVICE_STATUS + "connectivity-disconnected",
    "REACHABILITY_DATA": _DEVICE_STATUS + "connectivity-data",
    "REACHABILITY_SMS": _DEVICE_STATUS + "connectivity-sms",
    "REACHABILITY_DISCONNECTED": _DEVICE_STATUS + "connectivity-disconnected",
    "QOS_STATUS_CHANGED": "org.camaraproject.qod.v0.qos-status-changed",
}
# Older Network as Code bodies say only "the status changed"; eventDetail.deviceStatus says how.
DEVICE_STATUS_TYPES: Final[Mapping[str, Mapping[str, str]]] = {
    event_type: {
        "REACHABLE": _DEVICE_STATUS + "connectivity-data",
        "UNREACHABLE": _DEVICE_STATUS + "connectivity-disconnected",
    }
    for event_type in ("CONNECTIVITY", "DEVICE_STATUS_CHANGED")
}
_DIGEST_HEX_CHARS = 32


def normalize(headers: Mapping[str, str], body: bytes, ctx: Context) -> list[CloudEvent]:
    """Turn a CAMARA / Network as Code callback into events."""
    events = read_cloudevents(headers, body, ctx, merge_hybrid)
    if events is None:
        obj = load_object(body)
        if obj.get("specversion") is not None:
            merge_hybrid(obj, "")
            events = [finish(validate_event(obj), ctx)]
        else:
            legacy = obj.get("event")
            if not (isinstance(legacy, dict) and "eventType" in legacy):
                raise BadRequest(
                    "neither a CloudEvent (no specversion) nor a pre-CloudEvents notification "
                    "(no event.eventType)",
                    field="specversion",
                )
            events = [_from_legacy(obj, legacy, ctx)]
    batch = media_type(headers.get("Content-Type")) == BATCH
    for index, event in enumerate(events):
        check_partition_key(event, f"[{index}]." if batch else "")
    add_correlator(events, headers)
    return events


def merge_hybrid(obj: dict[str, Any], prefix: str) -> None:
    """Fold the legacy members of a hybrid body into the CloudEvent, then drop them.

    A CloudEvent without ``event`` and ``eventSubscriptionId`` is left alone.
    """
    if "event" not in obj and "eventSubscriptionId" not in obj:
        return
    legacy = obj.pop("event", None)
    subscription_id = obj.pop("eventSubscriptionId", None)
    if not (isinstance(subscription_id, str) and subscription_id):
        subscription_id = None
    if isinstance(legacy, dict):
        if obj.get("time") is None and legacy.get("eventTime") is not None:
            obj["time"] = check_time(legacy["eventTime"], prefix + "event.eventTime")
        if obj.get("data") is None and obj.get("data_base64") is None:
            detail = legacy.get("eventDetail")
            if isinstance(detail, dict) and detail:
                obj["data"] = detail
    data = obj.get("data")
    if subscription_id is not None:
        if data is None and obj.get("data_base64") is None:
            obj["data"] = data = {}
        if isinstance(data, dict):
            data.setdefault("subscriptionId", subscription_id)


def _from_legacy(obj: dict[str, Any], legacy: dict[str, Any], ctx: Context) -> CloudEvent:
    """Build the CloudEvent of a pre-CloudEvents ``{eventSubscriptionId, event}`` body."""
    detail = legacy.get("eventDetail")
    if detail is None:
        detail = {}
    elif not isinstance(detail, dict):
        raise BadRequest("event.eventDetail must be a JSON object", field="event.eventDetail")
    ce_type = _legacy_type(legacy["eventType"], detail)
    time = check_time(legacy.get("eventTime"), "event.eventTime")
    identifier = _legacy_id(obj, legacy.get("eventId"))  # before eventDetail is touched

    subscription_id = obj.get("eventSubscriptionId")
    if subscription_id is not None and not (isinstance(subscription_id, str) and subscription_id):
        raise BadRequest("eventSubscriptionId must be a non-empty string", "eventSubscriptionId")
    if subscription_id is not None:
        detail.setdefault("subscriptionId", subscription_id)

    event: CloudEvent = {
        "specversion": SPECVERSION,
        "id": identifier,
        "source": ctx.callback_source,
        "type": ce_type,
        "time": time,
        "datacontenttype": "application/json",
        "data": detail,
    }
    return finish(event, ctx)


def _legacy_type(event_type: Any, detail: dict[str, Any]) -> str:
    """The CloudEvent type of a pre-CloudEvents ``event.eventType``."""
    if not isinstance(event_type, str):
        raise BadRequest("event.eventType must be a string", field="event.eventType")
    by_status = DEVICE_STATUS_TYPES.get(event_type)
    if by_status is not None:
        status = detail.get("deviceStatus")
        ce_type = by_status.get(status) if isinstance(status, str) else None
        if ce_type is None:
            raise BadRequest(
                "event.eventDetail.deviceStatus must be REACHABLE or UNREACHABLE",
                field="event.eventDetail.deviceStatus",
            )
        return ce_type
    ce_type = LEGACY_TYPES.get(event_type)
    if ce_type is None:
        raise BadRequest(
            "unknown event.eventType; expected one of "
            + ", ".join([*LEGACY_TYPES, *DEVICE_STATUS_TYPES]),
            field="event.eventType",
        )
    return ce_type


def _legacy_id(obj: dict[str, Any], event_id: Any) -> str:
    """``eventId`` as a string, or else a stable digest of the whole body."""
    if event_id is None:
        try:
            canonical = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:  # pragma: no cover - load_json bounds the depth
            raise BadRequest("body cannot be digested into an id", field="event.eventId") from None
        return hashlib.sha256(canonical).hexdigest()[:_DIGEST_HEX_CHARS]
    if type(event_id) is int:
        return str(event_id)
    if isinstance(event_id, str) and event_id:
        return check_id(event_id, "event.eventId")
    raise BadRequest("event.eventId must be a non-empty string or an integer", "event.eventId")
