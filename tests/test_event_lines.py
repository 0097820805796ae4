"""The per-event log line rendered without structlog's chain: the same bytes the chain would
write (fields, order, masking, level, timestamp shape), and structlog whenever the process is
configured otherwise."""

from __future__ import annotations

import io
import logging
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import structlog
from structlog.testing import capture_logs

import gateway.logs as logs
from gateway.logs import configure_logging, log_events

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z")
EVENTS = [
    {"id": "5f1c9e2a-7d43-4b8e-9a61-0c2f7e5d8b13", "type": "org.camaraproject.roaming"},
    {"id": "+36721601234567", "type": "org.example.t1"},
    {"id": "36721601234567", "type": "a.b"},
    {"id": "someone@example.org", "type": "x@y.example"},
    {"id": "line\nbreak\u2028", "type": "t"},
    {"id": "12", "type": "1234567"},
]


class Captured:
    """Lines written by the process's JSON logger."""

    def __init__(self) -> None:
        self.raw = io.BytesIO()
        self.stream = io.BufferedWriter(self.raw)

    def lines(self) -> list[dict[str, Any]]:
        self.stream.flush()
        return [orjson.loads(line) for line in self.raw.getvalue().splitlines()]


@contextmanager
def configured(log_format: str) -> Iterator[None]:
    """configure_logging for one test; logging, structlog and the hooks restored after."""
    root = logging.getLogger()
    before = (root.level, root.handlers[:], logging.raiseExceptions)
    config = structlog.get_config()
    hooks = (sys.excepthook, threading.excepthook)
    try:
        configure_logging(log_format)
        yield
    finally:
        root.setLevel(before[0])
        root.handlers[:] = before[1]
        logging.raiseExceptions = before[2]
        logging.captureWarnings(False)
        structlog.configure(**config)
        sys.excepthook, threading.excepthook = hooks


@pytest.fixture
def json_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Captured]:
    """configure_logging("json") writing into a buffer."""
    captured = Captured()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(captured.stream))
    with configured("json"):
        monkeypatch.setattr(sys, "stdout", sys.__stdout__)
        yield captured


def test_direct_lines_equal_what_the_structlog_chain_writes(json_logs: Captured) -> None:
    """For every event (phone numbers, addresses, control characters) the direct line has the
    chain's fields in the chain's order with the same masked values."""
    source = "partner@example.com"
    log_events("event accepted", source, EVENTS)
    logger = structlog.get_logger("gateway.callbacks")
    for event in EVENTS:
        logger.info("event accepted", source=source, event_id=event["id"], event_type=event["type"])
    lines = json_logs.lines()
    direct, chain = lines[: len(EVENTS)], lines[len(EVENTS) :]
    assert len(chain) == len(EVENTS)
    for ours, theirs in zip(direct, chain, strict=True):
        assert list(ours) == list(theirs)
        assert ISO_UTC.fullmatch(ours.pop("timestamp"))
        theirs.pop("timestamp")
        assert ours == theirs
    assert direct[0]["source"] == "***@example.com"
    assert direct[1]["event_id"] == "+36**********67"
    assert direct[3]["event_type"] == "***@y.example"
    assert direct[5]["event_type"] == "1234567"[:2] + "***" + "67"


def test_a_test_capturing_logs_still_sees_every_line(json_logs: Captured) -> None:
    """Inside structlog's capture_logs the lines go through structlog (and are captured)."""
    with capture_logs() as captured:
        log_events("event accepted", "camara", EVENTS[:2])
    assert [entry["event_id"] for entry in captured] == [EVENTS[0]["id"], EVENTS[1]["id"]]
    assert json_logs.lines() == []


def test_console_format_goes_through_structlog(capsys: pytest.CaptureFixture[str]) -> None:
    """Console logs keep their renderer (escaped control characters included)."""
    with configured("console"):
        log_events("event accepted", "camara", [{"id": "a\nb", "type": "t"}])
    out = capsys.readouterr().out
    assert "event accepted" in out
    assert "a\\nb" in out


def test_the_timestamp_is_the_iso_utc_time_now() -> None:
    """The cached per-second formatting gives datetime's ISO form of the current time."""
    before = datetime.now(UTC)
    stamp = logs._now_iso()
    after = datetime.now(UTC)
    assert ISO_UTC.fullmatch(stamp)
    parsed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert before.replace(microsecond=0) <= parsed <= after
