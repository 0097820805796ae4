"""Operations endpoints: ``/healthz`` (alive), ``/readyz`` (broker and workers), ``/metrics``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aiohttp import web

from gateway.metrics import IngressMetrics


class OpsHandlers:
    def __init__(self, metrics: IngressMetrics, checks: Sequence[Callable[[], bool]]) -> None:
        self._metrics = metrics
        self._checks = tuple(checks)

    async def healthz(self, _request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok"})

    async def readyz(self, _request: web.Request) -> web.StreamResponse:
        if all(check() for check in self._checks):
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not ready"}, status=503)

    async def metrics(self, _request: web.Request) -> web.StreamResponse:
        response = web.Response(body=self._metrics.render())
        response.headers["Content-Type"] = self._metrics.content_type
        return response
