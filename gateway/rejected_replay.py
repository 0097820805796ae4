"""``event-gateway rejected``: the requests kept on ``<prefix>.rejected``, and trying them again.

A ``rejected list`` line is the kept record (``{source, status, reason, received, headers,
body | body_base64}``, contract §2) plus the message's ``message_id``; a message that is not
such a record is shown as ``{"message_id", "malformed", "body" | "body_base64"}``.

``rejected replay`` runs each kept request through today's configuration: the source as
configured now, its adapter, and its ``types`` (the checks the ingress makes after
authentication; the credential, the client address and the rate limit were checked when the
request came and are not kept). What is accepted now is published to the exchange exactly as
the ingress would have (same ids: ``gatewayreceived`` is the original receive time) and leaves
``.rejected``; what still fails goes back to ``.rejected`` with its new status and reason.
``plan_record`` is the pure part; no I/O here.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from aiormq.abc import DeliveredMessage
from multidict import CIMultiDict

from consumers.message_json import copied_properties, parsed_body, raw_body, text, undecodable
from consumers.replay import Copy, Plan, Planner
from gateway.adapters import ADAPTERS, Context
from gateway.adapters.errors import AdapterError
from gateway.amqp_message import to_body, to_message
from gateway.cloudevent import CloudEvent, parse_time
from gateway.settings import Settings, Source
from gateway.topology import Names
from gateway.trace_context import incoming_trace_context
from gateway.type_patterns import SourceTypes

NO_SOURCE = "no callback source of that name is configured"


@dataclass(frozen=True, slots=True)
class Accepted:
    """The request passes today: these events are published."""

    events: list[CloudEvent]
    received_at: datetime


@dataclass(frozen=True, slots=True)
class StillRejected:
    """The request fails today, with this status and reason."""

    status: int
    reason: str


def record_of(message: DeliveredMessage) -> tuple[dict[str, Any] | None, str | None]:
    """(the kept record, None), or (None, why it is not one)."""
    record, problem = parsed_body(message.body)
    if problem is not None:
        return None, problem
    if not isinstance(record, dict) or not isinstance(record.get("source"), str):
        return None, "not a rejected-request record (no source)"
    return record, None


def rejected_line(message: DeliveredMessage) -> dict[str, Any]:
    """What ``rejected list`` prints for one message."""
    properties = message.header.properties
    record, problem = record_of(message)
    line = dict(record) if record is not None else {"malformed": problem, **raw_body(message.body)}
    line["message_id"] = text(properties.message_id)
    line.update(undecodable(properties))
    return line


def source_of(message: DeliveredMessage) -> str | None:
    """The source a kept request came to (None for a malformed message)."""
    record, _ = record_of(message)
    return None if record is None else str(record["source"])


def plan_record(record: dict[str, Any], settings: Settings) -> Accepted | StillRejected:
    """What today's configuration makes of a kept request."""
    sources = {source.name: source for source in settings.sources}
    source = sources.get(str(record.get("source")))
    if source is None:
        return StillRejected(404, NO_SOURCE)
    body = _body(record)
    if body is None:
        return StillRejected(int(record.get("status") or 413), str(record.get("reason") or ""))
    try:
        received = str(record["received"])
        received_at = parse_time(received)
    except (KeyError, ValueError):
        return StillRejected(400, "the kept record has no valid received time")
    headers: CIMultiDict[str] = CIMultiDict()
    for name, value in (record.get("headers") or {}).items():
        headers.add(str(name), str(value))
    traceparent, tracestate = incoming_trace_context(headers)  # the kept request's own
    context = Context(
        source.name,
        received,
        source.max_future_skew_s,
        settings.http.max_events_per_request,
        received_at=received_at,
        traceparent=traceparent,
        tracestate=tracestate,
    )
    try:
        events = ADAPTERS[source.adapter](headers, body, context)
    except AdapterError as exc:
        return StillRejected(exc.status, exc.detail)
    forbidden = _forbidden_type(source, events)
    if forbidden is not None:
        return StillRejected(403, f"this source may not send events of type {forbidden!r}")
    return Accepted(events, received_at)


def _forbidden_type(source: Source, events: list[CloudEvent]) -> str | None:
    allows = SourceTypes(source.adapter, source.types).allows
    for event in events:
        if not allows(str(event["type"])):
            return str(event["type"])
    return None


def _body(record: dict[str, Any]) -> bytes | None:
    if isinstance(record.get("body"), str):
        return str(record["body"]).encode("utf-8", "surrogateescape")
    if isinstance(record.get("body_base64"), str):
        try:
            return base64.b64decode(record["body_base64"], validate=True)
        except (binascii.Error, ValueError):
            return None
    return None


def rejected_planner(settings: Settings) -> Planner:
    """Accepted requests to the events exchange; the rest back to ``.rejected``, re-reasoned."""
    names = Names.for_prefix(settings.amqp.exchange)

    def plan(message: DeliveredMessage) -> Plan:
        properties = message.header.properties
        record, problem = record_of(message)
        if record is None:
            copy = Copy(names.rejected, "", message.body, copied_properties(properties))
            return Plan((copy,), moves=False, detail={"outcome": "malformed", "reason": problem})
        outcome = plan_record(record, settings)
        if isinstance(outcome, Accepted):
            copies = tuple(
                Copy(
                    names.exchange,
                    str(event["type"]),
                    to_body(event),
                    to_message(event, outcome.received_at).properties,
                )
                for event in outcome.events
            )
            events = [{"id": event["id"], "type": event["type"]} for event in outcome.events]
            return Plan(copies, moves=True, detail={"outcome": "accepted", "events": events})
        renewed = {**record, "status": outcome.status, "reason": outcome.reason}
        body = orjson.dumps(renewed)
        copy = Copy(names.rejected, str(record["source"]), body, copied_properties(properties))
        detail = {"outcome": "rejected", "status": outcome.status, "reason": outcome.reason}
        return Plan((copy,), moves=False, detail=detail)

    return plan
