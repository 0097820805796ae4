"""``event-gateway run``: the ingress and the three built-in workers in one process.

The small-install and development mode. The workers share one state store and report their
metrics through the ingress's ``/metrics``; ``/readyz`` is 200 only while all of them are
connected and consuming. If a worker fails for good, the whole process stops with exit 1 so
a supervisor restarts it, rather than serving callbacks that nobody processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from consumers.handlers import HANDLERS, builtin_spec
from consumers.metrics import WorkerMetrics
from consumers.state import open_store
from consumers.worker import Worker
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
    workers: dict[str, Worker] = {}
    app = create_app(settings, readiness=[lambda: all(w.healthy for w in workers.values())])
    metrics = WorkerMetrics(app[METRICS].registry)
    workers.update(
        (name, Worker(settings, builtin_spec(settings.amqp, name), store=store, metrics=metrics))
        for name in HANDLERS
    )
    failed: list[str] = []

    def supervise(name: str) -> Callable[[], Coroutine[Any, Any, None]]:
        async def supervised() -> None:
            try:
                await workers[name].run(stop)
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
            companions=[supervise(name) for name in HANDLERS],
        )
    finally:
        await store.close()
    return 1 if failed else 0


__all__ = ["run_combined"]
