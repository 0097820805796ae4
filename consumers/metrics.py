"""Prometheus metrics of the workers in one process, in their own registry (never the global
one, so several workers or a test can each have theirs)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from gateway.metrics import register_process_metrics

OUTCOMES = ("ok", "retried", "dead_lettered")


class WorkerMetrics:
    """Deliveries by queue and outcome, and handler duration; share one per process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        if registry is None:
            registry = CollectorRegistry()
            register_process_metrics(registry)  # a registry of our own: the process's too
        self.registry = registry
        self.deliveries = Counter(
            "gateway_worker_deliveries",
            "Deliveries a worker finished, by queue and outcome (ok, retried, dead_lettered).",
            ("queue", "outcome"),
            registry=self.registry,
        )
        self.restarts = Counter(
            "gateway_worker_session_restarts",
            "Times a worker's broker session ended other than by a stop (connection or "
            "channel lost, consumer cancelled, a delivery task died, state store down) and "
            "it started again.",
            ("queue",),
            registry=self.registry,
        )
        self.handler_seconds = Histogram(
            "gateway_worker_handler_duration_seconds",
            "Time a handler took for one event, successful or not.",
            ("queue",),
            registry=self.registry,
        )

    def prepare(self, queue: str) -> None:
        """Create the series of ``queue`` at zero, so dashboards see them before traffic."""
        for outcome in OUTCOMES:
            self.deliveries.labels(queue, outcome)
        self.restarts.labels(queue)
        self.handler_seconds.labels(queue)
