"""Logging: personal data masked, JSON lines, buffered output that still reaches stdout."""

from __future__ import annotations

import io
import time

import orjson
import pytest

from gateway.logs import BufferedBytesLogger, mask, mask_personal_data


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("+36721601234567", "+36**********67"),
        ("+123456789", "+12*****89"),
        ("36701234567", "36*******67"),
        ("person@example.com", "***@example.com"),
        ("qs15-h556-rt89-1298", "qs15-h556-rt89-1298"),
        ("hello", "hello"),
    ],
)
def test_mask(value: str, masked: str) -> None:
    """Phone numbers keep +, two first and two last digits; e-mails keep the domain."""
    assert mask(value) == masked


def test_processor_masks_personal_keys_and_drops_text() -> None:
    """The processor masks known personal keys and drops message text."""
    event = {
        "event": "delivery",
        "partitionkey": "+36721601234567",
        "to": "a@b.example",
        "text": "Hello Notify!",
        "event_id": "123",
    }
    out = mask_personal_data(None, "info", event)
    assert out == {
        "event": "delivery",
        "partitionkey": "+36**********67",
        "to": "***@b.example",
        "event_id": "123",
    }


def test_buffered_logger_reaches_the_stream_without_an_explicit_flush() -> None:
    """Lines are buffered, then flushed by the background thread within its interval."""
    raw = io.BytesIO()
    stream = io.BufferedWriter(raw)  # type: ignore[arg-type]
    logger = BufferedBytesLogger(stream, interval=0.05)
    logger.info(orjson.dumps({"event": "x"}))
    deadline = time.monotonic() + 5
    while raw.getvalue() == b"" and time.monotonic() < deadline:
        time.sleep(0.01)  # deadline poll for the flusher thread
    assert raw.getvalue() == b'{"event":"x"}\n'
