"""The ingress metrics as Prometheus reads them: counts, cumulative buckets, publish results."""

from __future__ import annotations

from gateway.metrics import DURATION_BUCKETS, IngressMetrics


def _sample(metrics: IngressMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_requests_are_counted_by_source_and_status() -> None:
    """Each (source, status) pair is its own series; repeated requests add up."""
    metrics = IngressMetrics(lambda: True)
    for status in (204, 204, 401):
        metrics.observe("camara", status, 0.01)
    assert _sample(metrics, "gateway_requests_total", source="camara", status="204") == 2
    assert _sample(metrics, "gateway_requests_total", source="camara", status="401") == 1
    assert _sample(metrics, "gateway_requests_total", source="camara", status="503") is None


def test_duration_buckets_are_cumulative_and_inclusive() -> None:
    """A duration equal to a bound falls in that bucket (``le``); buckets only grow; +Inf and
    _count hold every request and _sum their total."""
    metrics = IngressMetrics(lambda: True)
    durations = (0.0005, 0.001, 0.003, 0.05, 20.0)
    for seconds in durations:
        metrics.observe("camara", 204, seconds)

    def bucket(bound: str) -> float | None:
        return _sample(
            metrics, "gateway_request_duration_seconds_bucket", source="camara", le=bound
        )

    assert bucket("0.001") == 2
    assert bucket("0.0025") == 2
    assert bucket("0.005") == 3
    assert bucket("0.05") == 4
    assert bucket("10.0") == 4
    assert bucket("+Inf") == 5
    counts = [bucket(str(bound)) for bound in DURATION_BUCKETS]
    assert counts == sorted(counts)
    assert _sample(metrics, "gateway_request_duration_seconds_count", source="camara") == 5
    total = _sample(metrics, "gateway_request_duration_seconds_sum", source="camara")
    assert total is not None
    assert abs(total - sum(durations)) < 1e-9


def test_publish_results_and_broker_gauge() -> None:
    """Publish outcomes start at zero and count what the handler reports; the gauge follows
    the broker check at scrape time."""
    connected = [True]
    metrics = IngressMetrics(lambda: connected[0])
    metrics.confirmed.inc(3)
    metrics.rejected_kept.inc()
    assert _sample(metrics, "gateway_publish_total", result="confirmed") == 3
    assert _sample(metrics, "gateway_publish_total", result="failed") == 0
    assert _sample(metrics, "gateway_publish_total", result="rejected_kept") == 1
    assert _sample(metrics, "gateway_broker_connected") == 1
    connected[0] = False
    assert _sample(metrics, "gateway_broker_connected") == 0
    assert b"# TYPE gateway_request_duration_seconds histogram" in metrics.render()


def test_process_collectors_and_build_info_are_exposed() -> None:
    """/metrics carries the Python process collectors and event_gateway_build_info{version}."""
    from gateway import __version__

    text = IngressMetrics(lambda: True).render().decode()
    for family in ("process_resident_memory_bytes", "process_cpu_seconds_total", "python_info"):
        assert f"\n{family}" in text, family
    assert f'event_gateway_build_info{{version="{__version__}"}} 1.0' in text


def test_worker_registry_of_its_own_has_the_process_collectors() -> None:
    """`consume --metrics-port` exposes the process metrics too; under `run` they are not
    registered twice in the ingress registry."""
    from consumers.metrics import WorkerMetrics

    worker = WorkerMetrics()
    assert worker.registry.get_sample_value("process_resident_memory_bytes") is not None
    assert worker.registry.get_sample_value("event_gateway_build_info", {"version": "0.1.0"})
    ingress = IngressMetrics(lambda: True)
    WorkerMetrics(ingress.registry)  # would raise on a duplicated time series
    assert ingress.render().count(b"# TYPE process_resident_memory_bytes") == 1
