"""The CloudEvent as both processes see it: a plain dict in the structured JSON form.

A dict keeps the ingress hot path cheap (orjson serialises it directly) and is exactly what a
consumer in any language reads from the queue. Adapters build these; ``consumers.Event`` gives
handlers a typed view of the same thing.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

CloudEvent = dict[str, Any]

SPECVERSION = "1.0"
REQUIRED_ATTRIBUTES = ("id", "source", "type", "specversion")
# Attributes repeated as AMQP headers, for header-based filtering (contract §4).
HEADER_ATTRIBUTES = ("id", "source", "type", "specversion", "time", "partitionkey")
# CloudEvents Distributed Tracing: also AMQP headers, under their W3C names (contract §9).
TRACE_ATTRIBUTES = ("traceparent", "tracestate")
# RFC 3339 section 5.6 date-time: date, "T" (or "t" or a space), time, fraction, zone.
_RFC3339 = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]([0-9]{2}:[0-9]{2}:[0-9]{2})(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def rfc3339(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 in UTC with millisecond precision.

    Every accepted callback formats its receive time: the date and time of day are formatted
    (``isoformat``, 1.5 us, most of it the offset) once per second, the milliseconds each time.
    """
    global _second  # one tuple, read and replaced whole: safe from any thread
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    key = (moment.second, moment.minute, moment.hour, moment.day, moment.month, moment.year)
    cached_key, text = _second
    if key != cached_key:
        text = moment.isoformat(timespec="seconds")[:-6]  # without "+00:00"
        _second = (key, text)
    return f"{text}.{moment.microsecond // 1000:03d}Z"


# The last second rfc3339 formatted: (its fields, its "YYYY-MM-DDTHH:MM:SS").
_second: tuple[tuple[int, ...], str] = ((), "")


def parse_time(value: str) -> datetime:
    """Parse an RFC 3339 timestamp (``Z`` or offset; any fraction length) into an aware datetime.

    Only the RFC 3339 ``date-time`` shape is accepted (no bare dates, no missing seconds, no
    basic-format ISO 8601); a fraction longer than microseconds is truncated. Raises ValueError
    when the text is not such a date-time with a time zone.
    """
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise ValueError(f"{value[:64]!r} is not an RFC 3339 date-time")
    date, clock, fraction, offset = match.groups()
    if offset in ("Z", "z"):
        offset = "+00:00"
    return datetime.fromisoformat(f"{date}T{clock}{(fraction or '')[:7]}{offset}")
