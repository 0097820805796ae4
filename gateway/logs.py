"""Logging, configured once per process: structlog JSON lines (orjson) on stdout.

Context (``event_id``, ``event_type``, ``source``) is bound per request or delivery with
``structlog.contextvars``. Personal data is masked by a processor, so no call site has to
remember: any field whose value looks like a phone number keeps ``+``, the first two and the
last two digits; one that looks like an e-mail address keeps only the domain; keys that hold
message text are dropped. Free text (errors, exceptions, library messages) is also scrubbed of
credentials (``Authorization`` values, bearer tokens, ``access_token``/signature/secret
parameters and headers, passwords in URLs) and of phone numbers and addresses inside it.

Every stdlib record (aiohttp, aio-pika, aiormq, asyncio, warnings) goes through the same
pipeline: no library writes its own line to stdout or stderr. Console output escapes control
characters, so a value cannot forge a line.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, BinaryIO, cast

import orjson
import structlog

_PHONE = re.compile(r"\+?\d{5,15}")
_EMAIL = re.compile(r"[^@\s]+@([^@\s]+)")
# Inside free text: numbers of 7 or more digits not part of a longer word, e-mail addresses.
_PHONE_IN_TEXT = re.compile(r"(?<![\w.+-])\+?\d{7,15}(?![\w])")
_EMAIL_IN_TEXT = re.compile(r"[\w.+-]+@([\w-]+(?:\.[\w-]+)+)")
_REDACTED = "[redacted]"
_SECRETS = (
    # A header line (raw request bytes quoted by a parser error, a dumped header block).
    re.compile(
        r"(?i)\b((?:proxy-)?authorization|cookie|set-cookie|x-api-key|[\w-]*(?:token|signature"
        r"|secret|password)[\w-]*)(\s*[:=]\s*)([^\r\n;&'\"\\]+)"
    ),
    re.compile(r"(?i)\b(bearer|basic)(\s+)([\w.~+/=-]+)"),
    re.compile(r"(?i)(\w+://)([^/@\s:]+:)([^/@\s]+)(?=@)"),  # a password in a URL
)
# Fields that hold free text: scrubbed whole, not only matched as a whole value.
FREE_TEXT_KEYS = ("event", "error", "reason", "detail", "exception", "message")
_FREE_TEXT = frozenset(FREE_TEXT_KEYS)
TEXT_KEYS = frozenset({"message_text", "text", "body"})


def mask(value: str) -> str:
    """Mask a phone number or e-mail address; other text is returned unchanged.

    >>> mask("+36721601234567")
    '+36**********67'
    """
    if _PHONE.fullmatch(value):
        plus = "+" if value.startswith("+") else ""
        digits = value.lstrip("+")
        return plus + digits[:2] + "*" * (len(digits) - 4) + digits[-2:]
    email = _EMAIL.fullmatch(value)
    if email:
        return f"***@{email.group(1)}"
    return value


def scrub(text: str) -> str:
    """Free text without credentials, phone numbers or e-mail addresses."""
    for pattern in _SECRETS:
        text = pattern.sub(_redact, text)
    text = _EMAIL_IN_TEXT.sub(r"***@\1", text)
    return _PHONE_IN_TEXT.sub(lambda match: mask(match.group()), text)


def _redact(match: re.Match[str]) -> str:
    return f"{match.group(1)}{match.group(2)}{_REDACTED}"


def mask_personal_data(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask personal values in every field, scrub free text, drop
    message text. The per-event line is hot: one pass; a value is examined only when it ends
    in a digit or holds an ``@``; our own constant ``event`` text is not rescanned."""
    if not TEXT_KEYS.isdisjoint(event_dict):
        for key in TEXT_KEYS & event_dict.keys():
            del event_dict[key]
    foreign = "logger" in event_dict  # a library's record: its message is free text
    for key, value in event_dict.items():
        if type(value) is not str or not value:
            continue
        if key in _FREE_TEXT and (foreign or key != "event"):
            event_dict[key] = scrub(value)
        elif value[-1] in _DIGITS or "@" in value:
            event_dict[key] = mask(value)
    return event_dict


_DIGITS = frozenset("0123456789")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def escape_control_characters(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor for console output: ``\\n``, ``\\x1b``… instead of the
    characters, so a value cannot start a forged line or move the cursor."""
    for key, value in event_dict.items():
        if type(value) is str and not value.isprintable():
            event_dict[key] = _CONTROL.sub(_escape, value)
    return event_dict


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return {10: "\\n", 13: "\\r", 9: "\\t"}.get(code) or (
        f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    )


class LibraryLogHandler(logging.Handler):
    """Sends every stdlib record into the structlog pipeline (masked, scrubbed, one line)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a library's bad format arguments: keep the template only
            message = str(record.msg)
        fields: dict[str, Any] = {"logger": record.name}
        if record.exc_info:
            fields["exc_info"] = record.exc_info
        structlog.get_logger(record.name).log(record.levelno, message, **fields)


class BufferedBytesLogger:
    """Writes log lines into a buffer that a background thread flushes every ``interval``.

    structlog's BytesLogger flushes after every line: one write system call per request, which
    measured at a quarter of the ingress's CPU time per request. Here lines reach stdout at
    most ``interval`` seconds late (and at exit); a crash can lose that last fraction of a
    second of log lines, never an event.
    """

    def __init__(self, stream: BinaryIO, interval: float = 0.2) -> None:
        if not isinstance(stream, io.BufferedIOBase):
            # PYTHONUNBUFFERED=1 (or -u) makes sys.stdout.buffer a raw FileIO: a write system
            # call per line again. Own a buffer over the same file descriptor (never closing it).
            raw = io.FileIO(stream.fileno(), "wb", closefd=False)
            stream = cast(BinaryIO, io.BufferedWriter(raw, buffer_size=1 << 16))
        self._write = stream.write
        self._stream = stream
        flusher = threading.Thread(
            target=self._flush_forever, args=(interval,), name="log-flush", daemon=True
        )
        flusher.start()
        atexit.register(self.flush)

    def msg(self, message: bytes) -> None:
        self._write(message + b"\n")

    def write_line(self, line: bytes) -> None:
        """Write ``line``, which already ends in a newline (``orjson.OPT_APPEND_NEWLINE``)."""
        self._write(line)

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg

    def flush(self) -> None:
        with contextlib.suppress(ValueError, OSError):  # closed at interpreter exit
            self._stream.flush()

    def _flush_forever(self, interval: float) -> None:
        while True:
            time.sleep(interval)
            self.flush()


def configure_logging(log_format: str = "json", level: int = logging.INFO) -> None:
    """Configure structlog for the whole process; call once from the CLI."""
    renderer: Any
    if log_format == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        logger_factory: Any = structlog.PrintLoggerFactory(sys.stdout)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
        shared = BufferedBytesLogger(sys.stdout.buffer)
        logger_factory = lambda *_args: shared  # noqa: E731 - one logger for the process
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.format_exc_info,
        mask_personal_data,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if log_format == "console":
        processors.append(escape_control_characters)
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=logger_factory,
        cache_logger_on_first_use=True,
    )
    global _event_lines  # one configuration per process
    _event_lines = None
    if log_format != "console" and level <= logging.INFO:
        _event_lines = (
            shared.write_line,
            structlog.get_config()["processors"],
            renderer,
            logger_factory,
        )
    # Libraries (aiohttp, aio-pika, aiormq, asyncio) log through stdlib logging: their
    # warnings and errors become lines of the same pipeline, never raw text on stderr.
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    root.addHandler(LibraryLogHandler())
    root.setLevel(logging.DEBUG if level <= logging.DEBUG else logging.WARNING)
    logging.raiseExceptions = False  # a failing record is dropped, never printed to stderr
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


# (write a whole line, processors, renderer, logger factory) of the JSON chain
# configure_logging set up.
_event_lines: tuple[Callable[[bytes], None], list[Any], Any, Any] | None = None


def log_events(message: str, source: str, events: Iterable[Mapping[str, Any]]) -> None:
    """One info line per event with ``source``, ``event_id`` and ``event_type``: the per-event
    line of the ingress, its hottest one.

    structlog's chain costs about ten microseconds a line (the lazy proxy, the bound logger,
    five processors, the renderer). While the process logs JSON at info level through the
    chain ``configure_logging`` installed, the lines are rendered here instead: the same
    fields in the same order, masked by the same rule as ``mask_personal_data``, the same
    level and timestamp, written to the same buffered logger (the ingress binds no context
    variables). Any other configuration (console, a higher level, a test capturing logs) goes
    through structlog."""
    direct = _event_lines
    config = structlog.get_config()
    processors = config["processors"]
    if (
        direct is None
        or processors is not direct[1]
        or processors[-1] is not direct[2]
        or config["logger_factory"] is not direct[3]
    ):
        logger = structlog.get_logger("gateway.callbacks")
        for event in events:
            logger.info(message, source=source, event_id=event["id"], event_type=event["type"])
        return
    write = direct[0]
    source = _masked(source)
    timestamp = _now_iso()
    for event in events:
        line = {
            "source": source,
            "event_id": _masked(event["id"]),
            "event_type": _masked(event["type"]),
            "event": message,
            "level": "info",
            "timestamp": timestamp,
        }
        write(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))


def _masked(value: Any) -> Any:
    """A field's value as ``mask_personal_data`` leaves it (not a free-text key). ``mask``'s
    two regular expressions run only on what could be a number (``+`` and decimal digits)
    or holds an ``@``: an event id ending in a digit is usually neither."""
    if type(value) is not str or not value:
        return value
    if "@" in value or (value[-1] in _DIGITS and value.lstrip("+").isdecimal()):
        return mask(value)
    return value


_second = -1
_second_text = ""


def _now_iso() -> str:
    """``datetime.now(UTC).isoformat()`` with ``Z`` (structlog's ``TimeStamper(fmt="iso",
    utc=True)``), the date and time of day formatted once per second."""
    global _second, _second_text  # the event loop's thread only; a race is only a re-format
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    if seconds != _second:
        _second_text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second = seconds
    micros = nanos // 1000
    return f"{_second_text}.{micros:06d}Z" if micros else f"{_second_text}Z"


def _log_uncaught(
    kind: type[BaseException], error: BaseException, traceback: TracebackType | None
) -> None:
    """An exception nothing caught: one scrubbed line, not a raw traceback on stderr."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, traceback)
        return
    structlog.get_logger("gateway").critical(
        "uncaught exception", logger="python", exc_info=(kind, error, traceback)
    )


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is not None:
        _log_uncaught(args.exc_type, args.exc_value, args.exc_traceback)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
