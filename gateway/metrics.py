"""Prometheus metrics of the ingress, in a registry of its own (one per app, so tests can
build several apps in one process)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

UNKNOWN_SOURCE = "unknown"  # label for paths naming no configured source: bounded cardinality
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class IngressMetrics:
    """Requests by source and status, request duration, publish outcomes, broker gauge."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, broker_connected: Callable[[], bool]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gateway_requests",
            "Callback requests answered, by source and HTTP status.",
            ("source", "status"),
            registry=self.registry,
        )
        self.duration = Histogram(
            "gateway_request_duration_seconds",
            "Time from request start to response, in seconds.",
            ("source",),
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.publishes = Counter(
            "gateway_publish",
            "Messages published to RabbitMQ, by result (confirmed, failed, rejected_kept).",
            ("result",),
            registry=self.registry,
        )
        self._children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
        self.confirmed = self.publishes.labels("confirmed")
        self.failed = self.publishes.labels("failed")
        self.rejected_kept = self.publishes.labels("rejected_kept")
        gauge = Gauge(
            "gateway_broker_connected",
            "1 while connected to RabbitMQ with the topology declared.",
            registry=self.registry,
        )
        gauge.set_function(lambda: float(broker_connected()))

    def observe(self, source: str, status: int, seconds: float) -> None:
        """Count one answered request; label children are looked up once per combination
        (``labels()`` costs a lock and a hash of every label on each call)."""
        children = self._children.get((source, status))
        if children is None:
            children = (self.requests.labels(source, str(status)), self.duration.labels(source))
            self._children[(source, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
