"""Nothing a message carries stops a worker (contract §10): a malformed ``x-gateway-attempts``,
an undecodable header or property, or a body that is no CloudEvent sends that one message to
``.dlq`` with ``x-gateway-error``, and the rest of its batch is applied."""

from __future__ import annotations

import contextlib
import datetime
import json
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp import encode

from consumers import lenient_decoding
from consumers.handlers import builtin_spec
from consumers.retry import ATTEMPTS_HEADER, ERROR_HEADER, InvalidAttempts, read_attempts
from consumers.state import open_store
from gateway.amqp_message import to_message
from gateway.topology import declare_worker_queue, dlq_name
from tests.worker_support import (
    Broker,
    as_received,
    drain_queue,
    eventually,
    make_settings,
    notify_status,
    queue_depth,
    run_cli,
    running_worker,
    sqlite_url,
    write_config,
)

GOOD = 4
RAW = "\x00raw:"
OUT_OF_RANGE = datetime.datetime(1999, 1, 1, tzinfo=datetime.UTC)


@contextlib.contextmanager
def raw_encoding() -> Iterator[None]:
    """Let this process publish what pamqp refuses to encode: a short string starting with
    ``RAW`` is sent as the Latin-1 bytes after it (not UTF-8), the header timestamp
    ``OUT_OF_RANGE`` as 2**63-1 seconds (past the year 9999)."""
    methods = encode.METHODS
    short, stamp = methods["shortstr"], encode.timestamp

    def short_bytes(value: Any) -> bytes:
        if isinstance(value, str) and value.startswith(RAW):
            data = value.removeprefix(RAW).encode("latin-1")
            return bytes((len(data),)) + data
        return short(value)  # type: ignore[no-any-return]

    def stamp_int(value: Any) -> bytes:
        return struct.pack(">Q", 2**63 - 1) if value == OUT_OF_RANGE else stamp(value)

    methods["shortstr"] = short_bytes
    encode.timestamp = stamp_int  # type: ignore[assignment]
    try:
        yield
    finally:
        methods["shortstr"], encode.timestamp = short, stamp  # type: ignore[assignment]


def _with_header(name: str, value: Any) -> Callable[[aio_pika.Message], None]:
    def change(message: aio_pika.Message) -> None:
        message.headers[name] = value

    return change


def _with_body(body: bytes) -> Callable[[aio_pika.Message], None]:
    def change(message: aio_pika.Message) -> None:
        message.body = body

    return change


def _with_message_id(value: bytes) -> Callable[[aio_pika.Message], None]:
    def change(message: aio_pika.Message) -> None:
        message.message_id = RAW + value.decode("latin-1")

    return change


POISONS: dict[str, tuple[Callable[[aio_pika.Message], None], str]] = {
    "superscript-two": (_with_header(ATTEMPTS_HEADER, "²"), "x-gateway-attempts"),
    "5000-digits": (_with_header(ATTEMPTS_HEADER, "9" * 5000), "x-gateway-attempts"),
    "float": (_with_header(ATTEMPTS_HEADER, 2.5), "x-gateway-attempts"),
    "not-ascii-bytes": (
        _with_header(ATTEMPTS_HEADER, bytearray(b"\xff\x01")),
        "x-gateway-attempts",
    ),
    "negative": (_with_header(ATTEMPTS_HEADER, -3), "x-gateway-attempts"),
    "boolean": (_with_header(ATTEMPTS_HEADER, True), "x-gateway-attempts"),
    "table": (_with_header(ATTEMPTS_HEADER, {"n": 1}), "x-gateway-attempts"),
    "huge-int": (_with_header(ATTEMPTS_HEADER, 2**62), "x-gateway-attempts"),
    "timestamp-header": (_with_header("x-when", OUT_OF_RANGE), "out of range"),
    "message-id-not-utf8": (_with_message_id(b"id-\xff\xfe"), "not UTF-8"),
    "body-not-json": (_with_body(b"\xff\xfenot json"), "InvalidEvent"),
    "body-deeply-nested": (_with_body(b"[" * 200_000), "InvalidEvent"),
    "body-json-array": (_with_body(b"[1, 2]"), "InvalidEvent"),
}


async def _publish_batch(env: Broker, poison: str, settings: Any, spec: Any) -> None:
    """Declare the sms queue, then publish GOOD receipts and one poisoned copy of another."""
    channel = await env.channel()
    await declare_worker_queue(channel, settings.amqp, settings.workers, spec.queue, spec.bindings)
    exchange = await channel.get_exchange(settings.amqp.exchange)
    received = datetime.datetime.now(datetime.UTC)
    for n in range(GOOD + 1):
        event = as_received(notify_status(f"m-{n}", "delivered", "2017-05-14T12:15:30Z", None))
        message = to_message(event, received)
        if n == GOOD:
            POISONS[poison][0](message)
        with raw_encoding():
            await exchange.publish(message, routing_key=event["type"])


@pytest.mark.parametrize("poison", sorted(POISONS))
async def test_a_poisoned_message_goes_to_the_dlq_and_the_batch_is_applied(
    env: Broker, tmp_path: Path, poison: str
) -> None:
    """One poisoned message among good ones: it alone is dead-lettered (with the reason), the
    others are applied and acked, and the worker stays ready."""
    settings = make_settings(env.prefix, sqlite_url(tmp_path), prefetch=16)
    spec = builtin_spec(settings.amqp, "sms")
    env.track(spec.queue, settings)
    await _publish_batch(env, poison, settings, spec)
    channel = await env.channel()
    async with running_worker(settings, spec) as worker:

        async def settled() -> bool:
            return (
                await queue_depth(channel, dlq_name(spec.queue)) == 1
                and await queue_depth(channel, spec.queue) == 0
            )

        await eventually(settled, what="poison dead-lettered, the rest acked")
        assert worker.ready
        assert worker.metrics.restarts.labels(spec.queue)._value.get() == 0
    store = await open_store(settings.state.url)
    try:
        applied = [await store.message(f"m-{n}") for n in range(GOOD + 1)]
    finally:
        await store.close()
    assert all(applied[:GOOD]), applied
    assert applied[GOOD] is None
    [dead] = await drain_queue(channel, dlq_name(spec.queue))
    error = dead.headers[ERROR_HEADER]
    assert isinstance(error, str)
    assert POISONS[poison][1] in error
    assert "\n" not in error
    assert dead.headers[ATTEMPTS_HEADER] == 1


@pytest.mark.slow
async def test_dlq_list_shows_every_poisoned_message(env: Broker, tmp_path: Path) -> None:
    """After a worker dead-lettered one message of each poison, ``dlq list`` prints a line
    for each and exits 0."""
    settings = make_settings(env.prefix, sqlite_url(tmp_path), prefetch=16)
    spec = builtin_spec(settings.amqp, "sms")
    env.track(spec.queue, settings)
    for poison in POISONS:
        await _publish_batch(env, poison, settings, spec)
    channel = await env.channel()
    async with running_worker(settings, spec):

        async def all_dead() -> bool:
            return await queue_depth(channel, dlq_name(spec.queue)) == len(POISONS)

        await eventually(all_dead, what="every poison in the DLQ")
    result = run_cli("dlq", "list", "sms", "--config", str(write_config(tmp_path, settings)))
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == len(POISONS)
    assert await queue_depth(channel, dlq_name(spec.queue)) == len(POISONS)


def test_lenient_decoding_installs_on_this_pamqp() -> None:
    """The fence: pamqp's decoder tables are the ones the lenient decoders replace."""
    assert lenient_decoding.install()


header_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.binary()
    | st.datetimes(timezones=st.just(datetime.UTC)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(header_values)
def test_read_attempts_takes_a_count_or_raises_invalid_attempts(value: Any) -> None:
    """Whatever the header holds, the count is a whole number below 10**6 or the error is
    InvalidAttempts (which dead-letters the message): nothing else escapes."""
    try:
        count = read_attempts({ATTEMPTS_HEADER: value})
    except InvalidAttempts as exc:
        error = str(exc)
    else:
        assert isinstance(count, int)
        assert 0 <= count < 10**6
        return
    assert len(error) < 200


@given(st.dictionaries(st.text(max_size=20), header_values, max_size=5))
def test_lenient_decoding_reads_back_what_pamqp_encodes(headers: dict[str, Any]) -> None:
    """For every table pamqp can encode, the lenient decoders read what pamqp's own would."""
    lenient_decoding.install()
    from pamqp import decode

    try:
        data = encode.field_table(headers)
    except (TypeError, ValueError, struct.error, OverflowError):
        return
    assert repr(decode.METHODS["table"](data)) == repr(decode.field_table(data))
