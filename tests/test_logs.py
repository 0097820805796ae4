"""Logging: personal data masked, JSON lines, buffered output that still reaches stdout."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import threading
import time

import orjson
import pytest
import structlog

from gateway.logs import (
    BufferedBytesLogger,
    escape_control_characters,
    mask,
    mask_personal_data,
    scrub,
)


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


def test_every_field_that_looks_personal_is_masked() -> None:
    """A phone number or an e-mail address is masked in any field, event_id and source too."""
    event = {
        "event": "event accepted",
        "event_id": "+36721601234567",
        "source": "person@example.com",
        "event_type": "notify.sms.delivery-status",
        "status": 204,
        "attempt": "12",
    }
    assert mask_personal_data(None, "info", event) == {
        "event": "event accepted",
        "event_id": "+36**********67",
        "source": "***@example.com",
        "event_type": "notify.sms.delivery-status",
        "status": 204,
        "attempt": "12",
    }


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abc.def-123", "abc.def-123"),
        ("invalid header b'POST / HTTP/1.1\\r\\nauthorization: Bearer tok\\r\\n'", "tok"),
        ("GET /callbacks/x?access_token=qwerty123&y=1", "qwerty123"),
        ("X-Auth-Token: zzz-top", "zzz-top"),
        ("webhook-signature: v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=", "K5oZfzN95Z"),
        ("amqp://guest:hunter2@broker:5672/", "hunter2"),
        ("secret=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_MfKQ9r8"),
        ("Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
    ],
)
def test_scrub_removes_credentials_from_free_text(text: str, secret: str) -> None:
    """Tokens, signatures, query secrets and URL passwords never survive scrubbing."""
    assert secret not in scrub(text)


def test_scrub_masks_numbers_and_addresses_inside_text() -> None:
    """Phone numbers and e-mail addresses inside a sentence are masked; short numbers stay."""
    out = scrub("no device +36721601234567 for a.b@example.org on port 5672")
    assert out == "no device +36**********67 for ***@example.org on port 5672"


def test_free_text_fields_are_scrubbed_but_constant_messages_left_alone() -> None:
    """error/exception fields are scrubbed; our own constant event text is not rescanned."""
    event = {"event": "token refused", "error": "Authorization: Bearer abc"}
    out = mask_personal_data(None, "warning", event)
    assert out["error"] == "Authorization: [redacted]"
    assert out["event"] == "token refused"


def test_console_output_escapes_control_characters() -> None:
    """A newline or an escape sequence in a value cannot forge a line or colour the terminal."""
    out = escape_control_characters(None, "info", {"event": "a\nb", "v": "x\x1b[31m\r"})
    assert out == {"event": "a\\nb", "v": "x\\x1b[31m\\r"}


def test_library_records_become_scrubbed_json_lines_on_stdout() -> None:
    """A stdlib record (aiohttp, asyncio...) is a JSON line on stdout, scrubbed; stderr is empty."""
    program = (
        "import logging\n"
        "from gateway.logs import configure_logging\n"
        "configure_logging('json')\n"
        "logging.getLogger('aiohttp.server').error('Error: %s', 'Authorization: Bearer t0ken')\n"
        "try:\n"
        "    raise ValueError('bad Bearer t0ken from +36721601234567')\n"
        "except ValueError:\n"
        "    logging.getLogger('asyncio').exception('Task exception was never retrieved')\n"
        "logging.getLogger('aiormq').warning('%s %s', 'too few args')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, timeout=30, check=True
    )
    assert done.stderr == b""
    lines = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert [line["logger"] for line in lines] == ["aiohttp.server", "asyncio", "aiormq"]
    assert b"t0ken" not in done.stdout
    assert b"36721601234567" not in done.stdout
    assert "ValueError" in lines[1]["exception"]
    assert lines[0]["level"] == "error"


def test_library_level_follows_the_configured_level() -> None:
    """Libraries log warnings and up, or everything when debugging."""
    from gateway.logs import configure_logging

    root = logging.getLogger()
    before = (root.level, root.handlers[:], logging.raiseExceptions)
    config = structlog.get_config()
    hooks = (sys.excepthook, threading.excepthook)
    try:
        configure_logging("json", level=logging.INFO)
        assert root.level == logging.WARNING
        configure_logging("json", level=logging.DEBUG)
        assert root.level == logging.DEBUG
    finally:
        root.setLevel(before[0])
        root.handlers[:] = before[1]
        logging.raiseExceptions = before[2]
        logging.captureWarnings(False)
        structlog.configure(**config)
        sys.excepthook, threading.excepthook = hooks


def test_uncaught_exceptions_are_scrubbed_json_lines_not_tracebacks_on_stderr() -> None:
    """An exception nothing caught (main thread or another) is one scrubbed line on stdout."""
    program = (
        "import threading\n"
        "from gateway.logs import configure_logging\n"
        "configure_logging('json')\n"
        "def fail():\n"
        "    raise ValueError('Authorization: Bearer t0ken')\n"
        "thread = threading.Thread(target=fail)\n"
        "thread.start()\n"
        "thread.join()\n"
        "raise RuntimeError('access_token=t0ken')\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr == b""
    lines = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert [line["event"] for line in lines] == ["uncaught exception"] * 2
    assert b"t0ken" not in done.stdout
    assert "RuntimeError" in lines[1]["exception"]
