"""W3C Trace Context of a callback request, for the CloudEvents Distributed Tracing extension.

An incoming ``traceparent`` (and its ``tracestate``) becomes the ``traceparent``/``tracestate``
attributes of every event of the request that carries none, and so the AMQP headers of the
same names (contract §9). Pure and cheap: a request without the header costs one lookup.
A malformed value is ignored, as the W3C recommendation says a receiver must; it is never a
reason to refuse a callback.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# version "-" trace-id "-" parent-id "-" flags, lower-case hex (W3C Trace Context §3.2).
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_ZERO_TRACE_ID = "0" * 32
_ZERO_PARENT_ID = "0" * 16
# W3C: a tracestate of at most 32 list members; 512 characters is what every hop must keep.
MAX_TRACESTATE = 512
_TRACESTATE = re.compile(rf"[\x20-\x7e]{{1,{MAX_TRACESTATE}}}")


def valid_traceparent(value: str) -> bool:
    """A version-00-shaped traceparent whose ids are not all zeros and version is not ff."""
    match = _TRACEPARENT.fullmatch(value)
    return (
        match is not None
        and not value.startswith("ff")
        and match.group(1) != _ZERO_TRACE_ID
        and match.group(2) != _ZERO_PARENT_ID
    )


def incoming_trace_context(headers: Mapping[str, str]) -> tuple[str | None, str | None]:
    """``(traceparent, tracestate)`` of a request, each None when absent or malformed (a
    tracestate only with a valid traceparent)."""
    parent = headers.get("traceparent")
    if parent is None:
        return None, None
    parent = parent.strip()
    if not valid_traceparent(parent):
        return None, None
    state = headers.get("tracestate")
    if state is not None:
        state = state.strip()
        if not _TRACESTATE.fullmatch(state):
            state = None
    return parent, state
