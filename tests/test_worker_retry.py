"""``consumers.retry``: where a failed attempt goes, and the message that takes it there;
the retry queues' names and TTLs (``gateway.topology``)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from aio_pika import DeliveryMode, Message

from consumers.retry import (
    ATTEMPTS_HEADER,
    ERROR_HEADER,
    InvalidAttempts,
    Route,
    attempts_made,
    backoff_for,
    error_line,
    jittered,
    read_attempts,
    republished,
    route_failure,
)
from gateway.settings import WorkerSettings
from gateway.topology import (
    retry_queue_arguments,
    retry_queue_name,
    retry_queue_names,
    retry_ttl_ms,
)


@pytest.mark.parametrize(
    ("headers", "attempts"),
    [
        (None, 0),
        ({}, 0),
        ({ATTEMPTS_HEADER: 2}, 2),
        ({ATTEMPTS_HEADER: "3"}, 3),
        ({ATTEMPTS_HEADER: b"4"}, 4),
        ({ATTEMPTS_HEADER: "x"}, 0),
        ({ATTEMPTS_HEADER: -1}, 0),
    ],
)
def test_attempts_made_reads_the_header(headers: dict[str, object] | None, attempts: int) -> None:
    """A fresh message has used no attempts; junk in the header counts as none."""
    assert attempts_made(headers) == attempts


def test_backoff_repeats_the_last_value() -> None:
    """Attempt n waits backoff[n-1]; past the list the last value repeats."""
    backoff = (1.0, 5.0, 30.0)
    assert [backoff_for(n, backoff) for n in (1, 2, 3, 4, 9)] == [1.0, 5.0, 30.0, 30.0, 30.0]


def test_route_failure_retries_then_dead_letters() -> None:
    """Attempts below max go to the retry queue of their delay, the last one to .dlq."""
    routes = [
        route_failure("q", n, max_attempts=3, backoff_s=(0.05, 2.0), jitter=0.0) for n in (1, 2, 3)
    ]
    assert routes == [
        Route("q.retry.50ms", 1, dead_letter=False),
        Route("q.retry.2s", 2, dead_letter=False),
        Route("q.dlq", 3, dead_letter=True),
    ]
    jittered_routes = [
        route_failure("q", n, max_attempts=3, backoff_s=(0.05, 2.0), jitter=0.1) for n in (1, 2)
    ]
    assert [r.queue for r in jittered_routes] == ["q.retry.50ms.ttl55ms", "q.retry.2s.ttl2200ms"]
    assert route_failure(
        "q", 1, max_attempts=3, backoff_s=(1.0,), jitter=0.1, retryable=False
    ) == Route("q.dlq", 1, dead_letter=True)


@pytest.mark.parametrize(
    ("delay", "jitter", "ttl_ms", "name"),
    [
        (5.0, 0.0, 5000, "q.retry.5s"),
        (0.05, 0.0, 50, "q.retry.50ms"),
        (1.0, 0.1, 1100, "q.retry.1s.ttl1100ms"),
        (30.0, 0.1, 33000, "q.retry.30s.ttl33s"),
        (120.0, 0.5, 180000, "q.retry.120s.ttl180s"),
        (0.0, 0.1, 0, "q.retry.0s"),
    ],
)
def test_retry_queue_ttl_is_the_longest_wait_and_its_name_says_so(
    delay: float, jitter: float, ttl_ms: int, name: str
) -> None:
    """The TTL is backoff * (1 + jitter) in ms; the name is the old one exactly when the TTL
    is the old one (the backoff), else it carries the TTL, so no existing queue is
    redeclared with another x-message-ttl."""
    assert retry_ttl_ms(delay, jitter) == ttl_ms
    assert retry_queue_name("q", delay, jitter=jitter) == name
    settings = WorkerSettings(retry_backoff_s=(delay, delay), retry_jitter=jitter)
    assert retry_queue_names("q", settings) == [name]
    arguments = retry_queue_arguments("quorum", "q", delay, jitter)
    assert arguments["x-message-ttl"] == ttl_ms
    assert arguments["x-dead-letter-routing-key"] == "q"


def test_every_jittered_wait_fits_in_its_retry_queue() -> None:
    """No expiration the worker sets (milliseconds, truncated) exceeds the queue's TTL."""
    for delay in (0.05, 0.1, 0.3, 1.0, 5.0, 30.0, 120.0):
        for jitter in (0.0, 0.1, 0.25, 1.0):
            longest = jittered(delay, jitter, lambda low, high: high)
            assert int(longest * 1000) <= retry_ttl_ms(delay, jitter)


def test_error_line_is_one_line_and_bounded() -> None:
    """The error header is ``Type: message`` on one line, at most 500 characters."""
    assert error_line(ValueError("bad\n  value")) == "ValueError: bad value"
    assert error_line(TimeoutError()) == "TimeoutError"
    long = error_line(RuntimeError("x" * 2000))
    assert len(long) == 500
    assert long.endswith("…")


def test_republished_keeps_body_and_properties_and_sets_headers() -> None:
    """Same body and properties, persistent, gateway headers set, broker headers dropped."""
    stamp = datetime(2025, 1, 1, tzinfo=UTC)
    original = Message(
        b"{}",
        content_type="application/cloudevents+json",
        message_id="id-1",
        type="t",
        app_id="event-gateway",
        timestamp=stamp,
        expiration=10,
        headers={"ce-id": "id-1", "x-death": [], "x-delivery-count": 2, ERROR_HEADER: "old"},
    )
    copy = republished(original, attempts=2, error="ValueError: bad")
    assert copy.body == b"{}"
    assert copy.headers == {"ce-id": "id-1", ATTEMPTS_HEADER: 2, ERROR_HEADER: "ValueError: bad"}
    assert (copy.content_type, copy.message_id, copy.type, copy.app_id) == (
        "application/cloudevents+json",
        "id-1",
        "t",
        "event-gateway",
    )
    assert copy.timestamp == stamp
    assert copy.delivery_mode == DeliveryMode.PERSISTENT
    assert copy.expiration is None
    reset = republished(copy, attempts=None, error=None)
    assert reset.headers == {"ce-id": "id-1"}


@pytest.mark.parametrize(
    ("headers", "attempts"),
    [(None, 0), ({}, 0), ({ATTEMPTS_HEADER: 2}, 2), ({ATTEMPTS_HEADER: b"4"}, 4)],
)
def test_read_attempts_takes_a_count(headers: dict[str, object] | None, attempts: int) -> None:
    """No header is 0 attempts; an int or its ASCII digits is the count."""
    assert read_attempts(headers) == attempts


@pytest.mark.parametrize(
    "value", ["²", "9" * 5000, 2.5, -1, True, "", " 3", "x", {"n": 1}, [1], None, 10**6]
)
def test_read_attempts_refuses_what_is_no_count(value: object) -> None:
    """Superscripts, huge digit strings, floats, negatives, booleans and the rest: the
    header is malformed (InvalidAttempts, so .dlq), and the error line stays short."""
    with pytest.raises(InvalidAttempts) as raised:
        read_attempts({ATTEMPTS_HEADER: value})
    assert len(str(raised.value)) < 200
    assert attempts_made({ATTEMPTS_HEADER: value}) == 0


def test_jittered_stays_within_the_fraction() -> None:
    """Each retry waits its backoff ± retry_jitter of it; no jitter is the backoff itself."""
    waits = [jittered(10.0, 0.1) for _ in range(1000)]
    assert all(9.0 <= wait <= 11.0 for wait in waits)
    assert min(waits) < 9.5 < 10.5 < max(waits)
    assert jittered(10.0, 0.0) == 10.0
    assert jittered(10.0, 0.5, lambda low, high: high) == 15.0


def test_jittered_waits_cover_both_sides_of_the_backoff() -> None:
    """With a deterministic uniform, the waits run from backoff * (1 - jitter) to
    backoff * (1 + jitter): the later half is not lost."""
    steps = [-1.0, -0.5, 0.0, 0.5, 1.0]
    draws = iter(steps)

    def uniform(low: float, high: float) -> float:
        assert (low, high) == (-0.2, 0.2)
        return low + (high - low) * (next(draws) + 1.0) / 2.0

    waits = [jittered(10.0, 0.2, uniform) for _ in steps]
    assert waits == pytest.approx([8.0, 9.0, 10.0, 11.0, 12.0])
    assert min(waits) < 10.0 < max(waits)
