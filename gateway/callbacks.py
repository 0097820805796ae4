"""``POST /callbacks/{source}`` and its ``OPTIONS`` handshake: glue from HTTP to the pure parts.

The order is the contract: find the source (404), check the client address (403) and
authenticate before touching the body (401; a signature scheme reads the raw body first),
the source's rate limit (429), read at most ``max_body_bytes`` (413), normalise (400/415),
check the types the source may send (403), publish and wait for every confirm (204, or
503 + ``Retry-After``). A 4xx after authentication (but a 429, which the sender retries) is
kept on ``<prefix>.rejected`` before it is answered, because Notify never retries a 4xx.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Protocol

from aiohttp import web

from gateway.adapters import ADAPTERS, Context
from gateway.adapters.errors import AdapterError
from gateway.auth import AuthResult, Outcome
from gateway.body_reader import BodyNotReceived, InflightFull, read_charged
from gateway.callback_request import CallbackHandler, CallbackRequest
from gateway.cloudevent import CloudEvent, rfc3339
from gateway.inflight import InflightBudget, Reservation
from gateway.logs import get_logger, log_events
from gateway.memory import MemoryTrimmer
from gateway.metrics import UNKNOWN_SOURCE, IngressMetrics
from gateway.no_content import NoContent
from gateway.problem import problem_response
from gateway.publisher import BrokerUnavailable
from gateway.rate_limit import retry_after
from gateway.rejected import rejected_record
from gateway.settings import Settings, Source
from gateway.source_access import SourceAccess
from gateway.trace_context import incoming_trace_context
from gateway.tracing import ingress_tracing

log = get_logger("gateway.callbacks")

RETRY_AFTER_S = "5"
# One answer for every failed credential, whatever was wrong with it (contract §8).
UNAUTHORIZED_DETAIL = "valid credentials for this source are required"
UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'Bearer realm="event-gateway"'}


class EventPublisher(Protocol):
    """What the handler needs from a publisher (``gateway.publisher.Publisher`` is one)."""

    @property
    def ready(self) -> bool: ...

    @property
    def frame_max(self) -> int:
        """The broker connection's frame size (0: no limit): a bigger AMQP header is a 400."""
        ...

    async def publish_events(self, events: list[CloudEvent], received: datetime) -> None: ...

    async def publish_rejected(self, record: bytes, source: str, received: datetime) -> None: ...


class CallbackHandlers:
    """The request handlers, bound once to the settings, publisher and metrics."""

    def __init__(
        self,
        settings: Settings,
        publisher: EventPublisher,
        metrics: IngressMetrics,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sources = {source.name: source for source in settings.sources}
        self._adapters = {source.name: ADAPTERS[source.adapter] for source in settings.sources}
        self._max_body = settings.http.max_body_bytes
        self._max_events = settings.http.max_events_per_request
        self._too_large = f"the body is larger than {self._max_body} bytes"
        self._publisher = publisher
        # §9: OpenTelemetry spans when configured (None: off, one check per request), and the
        # request's W3C trace context for its events (the receive span's when tracing).
        self._tracing = ingress_tracing()
        self._exchange = settings.amqp.exchange
        self._trace_context = (
            incoming_trace_context if self._tracing is None else self._tracing.event_trace_context
        )
        self._metrics = metrics
        self._clock = clock
        self.inflight = InflightBudget(
            settings.http.max_inflight_bytes, on_drained=MemoryTrimmer().request
        )
        self.access = {
            source.name: SourceAccess(source, settings.http.trusted_proxies)
            for source in settings.sources
        }

    async def post(self, request: web.Request) -> web.StreamResponse:
        """``POST /callbacks/{source}`` for any name: the configured ones come here only when
        the path was percent-encoded; the others get their 404."""
        return await self._post(request, self._sources.get(request.match_info["source"]))

    def post_to(self, source: Source) -> CallbackHandler:
        """The handler of one source's own path (a plain route: no pattern to match); a
        partial, not a wrapping coroutine: one frame less on every resumption."""
        return partial(self._post, source=source)

    async def _post(self, request: CallbackRequest, source: Source | None) -> web.StreamResponse:
        started = time.perf_counter()
        charge = self.inflight.charge(source.name if source else "")
        try:
            if self._tracing is None:
                response = await self._handle(request, source, charge)
            else:
                response = await self._tracing.request(
                    request.headers,
                    source.name if source else UNKNOWN_SOURCE,
                    request.path,
                    lambda: self._handle(request, source, charge),
                )
        except InflightFull:
            log.warning("callback not accepted: in-flight bytes", status=503)
            response = problem_response(
                503,
                "too many request bodies are being processed; retry later",
                headers={"Retry-After": "1"},
            )
        except BodyNotReceived as exc:  # broken framing; or the client is gone (no one hears)
            log.info("body not received", status=400, error=str(exc))
            response = problem_response(400, "the body did not arrive whole")
            response.force_close()  # the rest of the stream cannot be trusted to frame requests
        finally:
            charge.release()
        self._metrics.observe(
            source.name if source else UNKNOWN_SOURCE,
            response.status,
            time.perf_counter() - started,
        )
        return response

    async def _handle(
        self, request: CallbackRequest, source: Source | None, charge: Reservation
    ) -> web.StreamResponse:
        if source is None:
            return problem_response(404, "no callback source of that name is configured")
        received_at = self._clock()
        # Contract §8: allow_from, the credential, rate_limit (gateway.source_access).
        access = self.access[source.name]
        if access.restricted and not access.admits(
            request.remote, request.headers.getall("X-Forwarded-For", ())
        ):
            log.info("callback refused", source=source.name, status=403, reason="allow_from")
            return problem_response(403, "this client address may not send to this source")
        body: bytes | None = None
        if access.needs_body:  # a signature covers the raw body: read it first, keep nothing
            body = await self._read_body(request, charge)
            if body is None:
                return problem_response(413, self._too_large)
        auth = await access.authenticate(
            request.headers, request.query.get("access_token"), body, received_at
        )
        if auth.outcome is not Outcome.ACCEPTED:
            return await self._unauthenticated(request, source, auth, received_at, charge)
        wait = access.rate_wait()
        if wait:
            log.info("callback refused", source=source.name, status=429, reason="rate_limit")
            return problem_response(
                429,
                "this source is over its rate limit",
                headers={"Retry-After": retry_after(wait)},
            )
        received = rfc3339(received_at)
        if body is None:
            body = await self._read_body(request, charge)
            if body is None:
                return await self._reject(request, source, 413, self._too_large, received_at, None)

        try:
            traceparent, tracestate = self._trace_context(request.headers)
            ctx = Context(
                source.name,
                received,
                source.max_future_skew_s,
                self._max_events,
                self._publisher.frame_max,
                received_at,
                traceparent=traceparent,
                tracestate=tracestate,
            )
            events = self._adapters[source.name](request.headers, body, ctx)
        except AdapterError as exc:
            kept = None if exc.status == 413 else body  # a 413 record carries no body (§4)
            return await self._reject(
                request, source, exc.status, exc.detail, received_at, kept, field=exc.field
            )
        forbidden = access.forbidden_type(events)
        if forbidden is not None:
            return await self._reject(
                request,
                source,
                403,
                f"this source may not send events of type {forbidden!r}",
                received_at,
                body,
                field="type",
            )

        try:
            publishing = self._publisher.publish_events(events, received_at)
            if self._tracing is None:
                await publishing
            else:
                await self._tracing.publish(publishing, self._exchange, len(events))
        except BrokerUnavailable as exc:
            self._metrics.failed.inc(len(events))
            log.warning("callback not accepted", source=source.name, status=503, error=str(exc))
            return problem_response(
                503, f"the event could not be stored: {exc}", headers={"Retry-After": RETRY_AFTER_S}
            )
        self._metrics.confirmed.inc(len(events))
        log_events("event accepted", source.name, events)
        return NoContent()

    async def _read_body(self, request: CallbackRequest, charge: Reservation) -> bytes | None:
        """The body, or None when it is larger than ``max_body_bytes``."""
        if (request.content_length or 0) > self._max_body:
            return None
        return await read_charged(request, charge, self._max_body)  # under max_inflight_bytes (§7)

    async def _unauthenticated(
        self,
        request: CallbackRequest,
        source: Source,
        auth: AuthResult,
        received_at: datetime,
        charge: Reservation,
    ) -> web.StreamResponse:
        """401 (one generic answer), or 503 when the keys to check it cannot be loaded. An
        expired bearer token that matched is kept on ``.rejected`` first (contract §8)."""
        if auth.outcome is Outcome.UNAVAILABLE:
            log.warning("callback not checked: keys unavailable", source=source.name, status=503)
            return problem_response(
                503,
                "the keys to check this credential cannot be loaded right now",
                headers={"Retry-After": retry_after(auth.retry_after_s)},
            )
        if auth.outcome is Outcome.EXPIRED:
            body = await self._read_body(request, charge)
            kept = await self._reject(request, source, 401, "token expired", received_at, body)
            if kept.status == 503:
                return kept
        log.info("callback refused", source=source.name, status=401)
        return problem_response(401, UNAUTHORIZED_DETAIL, headers=UNAUTHORIZED_HEADERS)

    async def _reject(
        self,
        request: CallbackRequest,
        source: Source,
        status: int,
        reason: str,
        received_at: datetime,
        body: bytes | None,
        field: str | None = None,
    ) -> web.StreamResponse:
        """Keep the request on the rejected queue, then answer the 4xx (or 503 if not kept)."""
        record = rejected_record(
            source=source.name,
            status=status,
            reason=reason,
            received=rfc3339(received_at),
            headers=request.headers.items(),
            body=body,
        )
        try:
            await self._publisher.publish_rejected(record, source.name, received_at)
        except BrokerUnavailable as exc:
            log.warning("rejected request not kept", source=source.name, status=503, error=str(exc))
            return problem_response(
                503,
                f"the request could not be kept for inspection: {exc}",
                headers={"Retry-After": RETRY_AFTER_S},
            )
        self._metrics.rejected_kept.inc()
        log.info("callback rejected", source=source.name, status=status, reason=reason, field=field)
        return problem_response(status, reason, field=field)

    async def options(self, request: web.Request) -> web.StreamResponse:
        """CloudEvents webhook validation handshake (HTTP webhook spec §4.1)."""
        if request.match_info["source"] not in self._sources:
            return problem_response(404, "no callback source of that name is configured")
        headers = {"Allow": "POST, OPTIONS"}
        origin = request.headers.get("WebHook-Request-Origin")
        if origin:
            headers["WebHook-Allowed-Origin"] = origin
            headers["WebHook-Allowed-Rate"] = request.headers.get("WebHook-Request-Rate", "*")
        return web.Response(status=200, headers=headers)
