"""Reading a request body under the in-flight budget (``gateway.inflight``).

Errors:
    InflightFull: the budget (or the source's share of it) is spent; the answer is 503 +
        ``Retry-After``, the body is not read (or dropped at once).
    BodyNotReceived: the client went away, or the connection was closed by ``body_timeout_s``,
        or the chunked framing was broken, before the whole body arrived.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from gateway.callback_request import CallbackRequest
from gateway.inflight import Reservation, parsed_cost


class InflightFull(Exception):
    """Too many request bodies are held at once."""


class BodyNotReceived(Exception):
    """The body did not arrive (client gone, body timeout, broken chunked framing)."""


async def read_charged(
    request: CallbackRequest, charge: Reservation, max_body: int
) -> bytes | None:
    """The body, charged to the request's reservation ``charge`` (released by the handler
    once the request is answered); None when over ``max_body``."""
    if not charge.resize(max(charge.amount, request.content_length or max_body)):
        raise InflightFull
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return None
    except (ConnectionError, RequestPayloadError) as exc:
        # Nothing more of this body is read: without this, aiohttp reads on after the answer
        # (its lingering close), meets the same error and logs it as an unhandled exception.
        if isinstance(request, web.BaseRequest):  # a fast-path request is read whole already
            request.content.feed_eof()
        raise BodyNotReceived(str(exc) or type(exc).__name__) from None
    if not charge.resize(max(charge.amount, parsed_cost(body))):
        raise InflightFull
    return body
