"""The lean dispatch of ``POST /callbacks/<name>``: the hot path skips aiohttp's router and
middleware chain.

``Application._handle`` resolves the route (a ``UrlMappingMatchInfo`` per request), freezes
it, and runs the middleware chain (aiohttp's own ``_fix_request_current_app`` wrapper and
``problem_middleware``) around the handler: about an eighth of the ingress's CPU per request.
A callback to a configured source is an exact path known at start, so the server's request
handler looks the raw request target up in a dict first and calls that source's handler
inside the same problem+json error guard; everything else (another method, a query string, an
``Expect`` header, a percent-encoded or unknown name, ``/healthz``, ``/metrics``…) goes through
the application exactly as before, so routing answers (404, 405 with ``Allow``) do not change.

With ``[http] fast_path`` on (the default), most callbacks never reach aiohttp
(``gateway.callback_protocol``); this dispatch serves those that do: on a connection handed
to aiohttp by an earlier request of another shape, or with ``fast_path = false``.
``gateway.runner.GatewayRunner`` installs it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from aiohttp import hdrs
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from gateway.app import answer_problems
from gateway.callback_request import CallbackHandler

RequestHandler = Callable[[BaseRequest], Awaitable[StreamResponse]]


def lean_dispatch(
    routes: Mapping[str, CallbackHandler], fallback: RequestHandler
) -> RequestHandler:
    """A server request handler: ``POST`` to a path of ``routes`` straight to its handler,
    anything else to ``fallback`` (the application's own ``_handle``)."""
    posts = dict(routes)
    post_method = hdrs.METH_POST
    expect = hdrs.EXPECT

    async def dispatch(request: BaseRequest) -> StreamResponse:
        if request.method == post_method:
            handler = posts.get(request.raw_path)
            # ``Expect: 100-continue`` is answered by the router's expect handler: without it a
            # client waiting for the 100 stalls (curl 1 s, others until their body times out).
            if handler is not None and expect not in request.headers:
                return await answer_problems(request, handler)
        return await fallback(request)

    return dispatch
