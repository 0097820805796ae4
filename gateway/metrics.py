"""Prometheus metrics of the ingress, in a registry of its own (one per app, so tests can
build several apps in one process).

The per-request numbers are plain counters read by a collector at scrape time, not
prometheus_client metric objects: those take a lock on every update, which the ingress paid
several times per request, while every update and every scrape here happen on the one event
loop thread.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gateway import __version__

UNKNOWN_SOURCE = "unknown"  # label for paths naming no configured source: bounded cardinality
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PUBLISH_RESULTS = ("confirmed", "failed", "rejected_kept")


class BuildInfo(Collector):
    """``event_gateway_build_info{version}`` = 1: which release a process runs."""

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "event_gateway_build_info",
            "Always 1; the labels say which event-gateway release this process runs.",
            labels=("version",),
        )
        info.add_metric((__version__,), 1.0)
        yield info


def register_process_metrics(registry: CollectorRegistry) -> None:
    """Add the standard Python collectors (``process_*``: CPU, memory, open files;
    ``python_gc_*``; ``python_info``) and the build info to a process's own registry.

    The collectors are prometheus_client's default ones, which read this process's /proc
    entry at scrape time; they are registered here because every registry of ours is a
    private one, not the global registry that holds them by default.
    """
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR, BuildInfo()):
        registry.register(collector)


class Count:
    """A counter without a lock: only the event loop thread touches it."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class _Durations:
    """One source's request-duration histogram: a count per bucket (not cumulative) and the
    sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.total += seconds

    def buckets(self) -> list[tuple[str, float]]:
        cumulative, running = [], 0
        for bound, count in zip((*map(str, DURATION_BUCKETS), "+Inf"), self.counts, strict=True):
            running += count
            cumulative.append((bound, float(running)))
        return cumulative


class IngressMetrics(Collector):
    """Requests by source and status, request duration, publish outcomes, broker gauge."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(
        self, broker_connected: Callable[[], bool], fallbacks: Callable[[], int] = lambda: 0
    ) -> None:
        self._broker_connected = broker_connected
        self._fallbacks = fallbacks
        self._requests: dict[tuple[str, int], Count] = {}
        self._durations: dict[str, _Durations] = {}
        self._publishes = {result: Count() for result in PUBLISH_RESULTS}
        self.confirmed = self._publishes["confirmed"]
        self.failed = self._publishes["failed"]
        self.rejected_kept = self._publishes["rejected_kept"]
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self)
        # ``serve --workers N`` swaps in a renderer that adds the sibling processes' numbers.
        self.renderer: Callable[[], bytes] = lambda: generate_latest(self.registry)
        register_process_metrics(self.registry)

    def observe(self, source: str, status: int, seconds: float) -> None:
        """Count one answered request and its duration."""
        count = self._requests.get((source, status))
        if count is None:
            count = self._requests[(source, status)] = Count()
        count.value += 1
        durations = self._durations.get(source)
        if durations is None:
            durations = self._durations[source] = _Durations()
        durations.observe(seconds)

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "gateway_requests",
            "Callback requests answered, by source and HTTP status.",
            labels=("source", "status"),
        )
        for (source, status), count in sorted(self._requests.items()):
            requests.add_metric((source, str(status)), count.value)
        yield requests
        duration = HistogramMetricFamily(
            "gateway_request_duration_seconds",
            "Time from request start to response, in seconds.",
            labels=("source",),
        )
        for source, durations in sorted(self._durations.items()):
            duration.add_metric((source,), durations.buckets(), durations.total)
        yield duration
        publishes = CounterMetricFamily(
            "gateway_publish",
            "Messages published to RabbitMQ, by result (confirmed, failed, rejected_kept).",
            labels=("result",),
        )
        for result, count in self._publishes.items():
            publishes.add_metric((result,), count.value)
        yield publishes
        yield GaugeMetricFamily(
            "gateway_broker_connected",
            "1 while connected to RabbitMQ with the topology declared.",
            value=float(self._broker_connected()),
        )
        yield CounterMetricFamily(
            "event_gateway_publisher_fallbacks",
            "Times the fast publish path failed and the ingress fell back to the standard one.",
            value=self._fallbacks(),
        )

    def render(self) -> bytes:
        return self.renderer()
