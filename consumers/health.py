"""``/healthz`` and ``/metrics`` for ``consume --metrics-port`` (probes and scraping).

The only module of ``consumers`` that uses aiohttp, and it imports it inside ``serve_health``,
so a worker without a metrics port never loads the web stack.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


@asynccontextmanager
async def serve_health(
    port: int, registry: CollectorRegistry, healthy: Callable[[], bool], host: str = "0.0.0.0"
) -> AsyncIterator[int]:
    """Serve ``/healthz`` (200 while ``healthy()``, else 503) and ``/metrics`` on ``port``
    (0 picks a free one) while the block runs; yields the port bound."""
    from aiohttp import web

    async def healthz(_request: web.Request) -> web.Response:
        ok = healthy()
        return web.json_response(
            {"status": "ok" if ok else "unavailable"}, status=200 if ok else 503
        )

    async def metrics(_request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/healthz", healthz)
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
