"""The ``cloudevents`` adapter: the CloudEvents HTTP binding, in its three modes.

* structured: ``Content-Type: application/cloudevents+json``, the body is one event;
* batch: ``application/cloudevents-batch+json``, a JSON array of events, all or nothing, at
  most ``ctx.max_events`` of them (more is 413);
* binary: a ``ce-specversion`` header; attributes come from ``ce-*`` headers (percent-decoded),
  ``datacontenttype`` from Content-Type, and the body becomes ``data`` (JSON content types)
  or ``data_base64`` (anything else).

A plain JSON request without ``ce-specversion`` is not a CloudEvent (400); other content
types are 415.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

from gateway.adapters.context import Context
from gateway.adapters.correlation import add_correlator
from gateway.adapters.envelope import load_json, load_object, stamp, validate_event
from gateway.adapters.errors import BadRequest, TooManyEvents, UnsupportedMediaType
from gateway.adapters.media import BATCH, STRUCTURED, is_json, media_type
from gateway.adapters.partition import add_partition_key, partition_key
from gateway.cloudevent import CloudEvent

# Adapter-specific fix-up of one JSON event object before validation: (event, field prefix).
Prepare = Callable[[dict[str, Any], str], None]
# CAMARA events say which device they are about in ``data``: whatever adapter carries them,
# the gateway derives their ``partitionkey`` (the workers' device key) and refuses another.
CAMARA_NAMESPACE = "org.camaraproject."
# In binary mode these travel as the body and Content-Type, never as ce-* headers.
_NOT_HEADER_ATTRIBUTES = frozenset({"data", "data_base64", "datacontenttype"})


def normalize(headers: Mapping[str, str], body: bytes, ctx: Context) -> list[CloudEvent]:
    """Turn a CloudEvents HTTP request (structured, batch or binary) into events."""
    events = read_cloudevents(headers, body, ctx)
    if events is None:
        raise BadRequest(
            "not a CloudEvent: send application/cloudevents+json, or ce-* headers "
            "(binary mode) with a ce-specversion header",
            field="specversion",
        )
    batch = media_type(headers.get("Content-Type")) == BATCH
    for index, event in enumerate(events):
        event_type = event.get("type")
        if isinstance(event_type, str) and event_type.startswith(CAMARA_NAMESPACE):
            check_partition_key(event, f"[{index}]." if batch else "")
    add_correlator(events, headers)
    return events


def read_cloudevents(
    headers: Mapping[str, str], body: bytes, ctx: Context, prepare: Prepare | None = None
) -> list[CloudEvent] | None:
    """Events of a CloudEvents request; None for a JSON (or untyped) request in no CE mode.

    ``prepare`` is applied to each structured or batched event object before it is validated.
    Raises UnsupportedMediaType for a content type that is neither.
    """
    content_type = headers.get("Content-Type")
    essence = media_type(content_type)
    if essence == STRUCTURED:
        event = load_object(body)
        if prepare is not None:
            prepare(event, "")
        return [finish(validate_event(event), ctx)]
    if essence == BATCH:
        return read_batch(load_json(body), ctx, prepare)
    if headers.get("ce-specversion") is not None:
        return [read_binary(headers, body, content_type, essence, ctx)]
    if essence is None or is_json(essence):
        return None
    raise UnsupportedMediaType(
        f"content type {essence[:100]!r} is not a CloudEvents format and the request has "
        "no ce-specversion header",
        field="Content-Type",
    )


def finish(event: CloudEvent, ctx: Context, prefix: str = "") -> CloudEvent:
    """Add ``partitionkey`` (when derivable) and the gateway's attributes to a validated
    event, and check the result (``stamp``)."""
    add_partition_key(event)
    return stamp(event, ctx, prefix)


def read_batch(value: Any, ctx: Context, prepare: Prepare | None = None) -> list[CloudEvent]:
    """Check every event of a batch first, then stamp them all; ``[]`` is a valid batch."""
    if not isinstance(value, list):
        raise BadRequest("a CloudEvents batch must be a JSON array")
    if len(value) > ctx.max_events:
        raise TooManyEvents(
            f"a batch carries at most {ctx.max_events} events, this one {len(value)}"
        )
    for index, element in enumerate(value):
        if not isinstance(element, dict):
            raise BadRequest(f"batch element {index} is not a JSON object", field=f"[{index}]")
        prefix = f"[{index}]."
        if prepare is not None:
            prepare(element, prefix)
        validate_event(element, prefix)
    for index, element in enumerate(value):
        finish(element, ctx, f"[{index}].")
    return value


def read_binary(
    headers: Mapping[str, str],
    body: bytes,
    content_type: str | None,
    essence: str | None,
    ctx: Context,
) -> CloudEvent:
    """Build the event of a binary-mode request from its ce-* headers and body."""
    event: CloudEvent = {}
    for name, raw in headers.items():
        lower = name.lower()
        if not lower.startswith("ce-"):
            continue
        attribute = lower[3:]
        if not attribute:
            continue
        if attribute in _NOT_HEADER_ATTRIBUTES:
            raise BadRequest(f"{attribute} cannot be sent as a header in binary mode", attribute)
        if attribute in event:
            raise BadRequest(f"header {lower} is repeated", field=attribute)
        event[attribute] = _header_text(raw, attribute)
    if content_type is not None:
        event["datacontenttype"] = _header_text(content_type, "datacontenttype")
    if body:
        if essence is not None and is_json(essence):
            event["data"] = load_json(body, "data")
        else:
            event["data_base64"] = base64.b64encode(body).decode("ascii")
    return finish(validate_event(event), ctx)


def _header_text(value: str, attribute: str) -> str:
    """A header value percent-decoded as UTF-8 (HTTP binding §3.1.3.2); invalid UTF-8 is 400."""
    if "%" in value:
        try:
            value = unquote(value, errors="strict")
        except UnicodeDecodeError:
            raise BadRequest(
                f"{attribute} is not valid percent-encoded UTF-8", field=attribute
            ) from None
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise BadRequest(f"{attribute} is not valid UTF-8", field=attribute) from None
    return value


def check_partition_key(event: CloudEvent, prefix: str) -> None:
    """Make ``partitionkey`` the entity ``data`` names; BadRequest when the sender's differs.

    A sender's phone number without its ``+`` is the same entity, and is keyed with it.
    """
    event_type = event.get("type")
    derived = partition_key(event.get("data"), event_type if isinstance(event_type, str) else "")
    if derived is None:
        return
    sent = event.get("partitionkey")
    if sent != derived and not (isinstance(sent, str) and "+" + sent == derived):
        raise BadRequest(
            "partitionkey differs from the entity data names (data.device, data.sessionId "
            "or data.assignmentId)",
            field=prefix + "partitionkey",
        )
    event["partitionkey"] = derived
