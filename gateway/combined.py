"""``event-gateway run``: the ingress and the three built-in workers in one process.

The small-install and development mode. The workers share one state store and report their
metrics through the ingress's ``/metrics``; ``/readyz`` is 200 only once all of them are
consuming. If a worker fails for good, the whole process stops with exit 1 so a supervisor
restarts it, rather than serving callbacks that nobody processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from consumers.handlers import HANDLERS, builtin_spec
from consumers.metrics import WorkerMetrics
from consumers.state import open_store
from consumers.worker import run_worker
from gateway.app import METRICS, create_app
from gateway.logs import get_logger
from gateway.server import install_signal_handlers, serve_app
from gateway.settings import Settings

log = get_logger("gateway.combined")


async def run_combined(settings: Settings) -> int:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    try:
        store = await open_store(settings.state.url)
    except Exception as exc:  # the store names the problem; one line, no traceback
        log.error("cannot open the state store", error=str(exc))
        return 1
    ready = {name: asyncio.Event() for name in HANDLERS}
    app = create_app(settings, readiness=[event.is_set for event in ready.values()])
    metrics = WorkerMetrics(app[METRICS].registry)
    failed: list[str] = []

    def worker(name: str) -> Callable[[], Coroutine[Any, Any, None]]:
        async def supervised() -> None:
            spec = builtin_spec(settings.amqp, name)
            try:
                await run_worker(
                    settings, spec, stop=stop, ready=ready[name], store=store, metrics=metrics
                )
            except Exception as exc:
                log.error("worker failed; stopping the process", worker=name, error=repr(exc))
                failed.append(name)
                stop.set()

        return supervised

    try:
        await serve_app(
            app,
            settings.http.host,
            settings.http.port,
            stop,
            companions=[worker(name) for name in HANDLERS],
        )
    finally:
        await store.close()
    return 1 if failed else 0


__all__ = ["run_combined"]
