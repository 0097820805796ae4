"""The app factory: ``create_app(settings, *, publisher=...)`` builds the ingress.

Nothing happens at import time. Without a publisher the app owns a real one through a
``cleanup_ctx``: it starts connecting when the app starts and closes after in-flight requests
have been answered. Tests pass their own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.auth_jwt import jwks_lifecycle
from gateway.callback_request import CallbackHandler, CallbackRequest
from gateway.callbacks import CallbackHandlers, EventPublisher
from gateway.connections import HTTP_SETTINGS
from gateway.logs import get_logger
from gateway.metrics import IngressMetrics
from gateway.ops import OpsHandlers
from gateway.problem import problem_response
from gateway.publisher import Publisher
from gateway.settings import Settings

log = get_logger("gateway.app")

PUBLISHER = web.AppKey("publisher", EventPublisher)
METRICS = web.AppKey("metrics", IngressMetrics)
# ``/callbacks/<name>`` → that source's POST handler: the fast path's routes
# (``gateway.runner``) and aiohttp's lean dispatch (``gateway.dispatch``).
CALLBACK_ROUTES = web.AppKey("callback_routes", dict[str, CallbackHandler])


def create_app(
    settings: Settings,
    *,
    publisher: EventPublisher | None = None,
    readiness: Sequence[Callable[[], bool]] = (),
) -> web.Application:
    """Build the ingress app. ``readiness`` adds checks to ``/readyz`` (workers under ``run``)."""
    app = web.Application(
        client_max_size=settings.http.max_body_bytes, middlewares=[problem_middleware]
    )
    if publisher is None:
        owned = Publisher(settings.amqp)
        app.cleanup_ctx.append(_publisher_lifecycle(owned))
        publisher = owned
    ready_publisher = publisher
    metrics = IngressMetrics(
        lambda: ready_publisher.ready, lambda: getattr(ready_publisher, "fallbacks", 0)
    )
    app[PUBLISHER] = publisher
    app[METRICS] = metrics
    app[HTTP_SETTINGS] = settings.http
    callbacks = CallbackHandlers(settings, publisher, metrics)
    jwks = [access.jwks for access in callbacks.access.values() if access.jwks is not None]
    if jwks:
        app.cleanup_ctx.append(jwks_lifecycle(jwks))
    ops = OpsHandlers(metrics, (lambda: ready_publisher.ready, *readiness))
    routes = {f"/callbacks/{source.name}": callbacks.post_to(source) for source in settings.sources}
    app[CALLBACK_ROUTES] = routes
    for path, post in routes.items():
        app.router.add_post(path, post)
    app.router.add_post("/callbacks/{source}", callbacks.post)
    app.router.add_route("OPTIONS", "/callbacks/{source}", callbacks.options)
    app.router.add_get("/healthz", ops.healthz)
    app.router.add_get("/readyz", ops.readyz)
    app.router.add_get("/metrics", ops.metrics)
    for source in settings.sources:
        if source.auth == "none":
            log.warning(
                "source accepts callbacks without a credential (allow_from only)",
                source=source.name,
            )
        elif source.auth == "bearer" and not source.tokens:
            log.warning(
                "source has no tokens configured: every callback gets 401", source=source.name
            )
    return app


def _publisher_lifecycle(
    publisher: Publisher,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        publisher.start()
        yield
        await publisher.close()

    return lifecycle


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Routing errors (404, 405) and bugs (500) answer problem+json too, never a traceback."""
    return await answer_problems(request, handler)


async def answer_problems(
    request: CallbackRequest, handler: CallbackHandler | Handler
) -> web.StreamResponse:
    """``handler(request)``, its HTTP errors and bugs answered as problem+json (the
    middleware's body, also called by the lean dispatch; the fast path calls ``problem_for``
    in its own ``except``)."""
    try:
        return await handler(request)  # type: ignore[arg-type]
    except Exception as exc:
        return problem_for(exc, request.path)


def problem_for(exc: Exception, path: str) -> web.StreamResponse:
    """The problem+json answer to a handler's exception: its HTTP error (404, 405 with
    ``Allow``…), or a 500 for a bug, logged with its traceback. A non-error
    ``HTTPException`` (a redirect) is raised again. Call it inside the ``except``."""
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return problem_response(exc.status, exc.reason, headers=headers)
    log.exception("unhandled error", path=path)
    return problem_response(500, "internal error; the request was not accepted")
