"""``/healthz``, ``/readyz`` and ``/metrics`` for ``consume --metrics-port`` (probes and
scraping).

``/healthz`` (Kubernetes liveness) is 200 while the process, its event loop and the worker's
supervising loop run: a broker or store outage does not fail it, so it never restarts a
worker that is only waiting. ``/readyz`` (readiness) is 200 only while the worker is
connected and consuming.

The only module of ``consumers`` that uses aiohttp, and it imports it inside ``serve_health``,
so a worker without a metrics port never loads the web stack.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


@asynccontextmanager
async def serve_health(
    port: int,
    registry: CollectorRegistry,
    *,
    alive: Callable[[], bool],
    ready: Callable[[], bool],
    host: str = "0.0.0.0",
) -> AsyncIterator[int]:
    """Serve ``/healthz`` (200 while ``alive()``), ``/readyz`` (200 while ``ready()``), each
    503 otherwise, and ``/metrics`` on ``port`` (0 picks a free one) while the block runs;
    yields the port bound."""
    from aiohttp import web

    def probe(check: Callable[[], bool]) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def answer(_request: web.Request) -> web.Response:
            ok = check()
            return web.json_response(
                {"status": "ok" if ok else "unavailable"}, status=200 if ok else 503
            )

        return answer

    async def metrics(_request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def no_banner(_request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Server"] = "event-gateway"  # no version banner (§7)

    app = web.Application()
    app.on_response_prepare.append(no_banner)
    app.router.add_get("/healthz", probe(alive))
    app.router.add_get("/readyz", probe(ready))
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = [address for address in runner.addresses if isinstance(address, tuple)]
        yield int(bound[0][1]) if bound else port
    finally:
        await runner.cleanup()
