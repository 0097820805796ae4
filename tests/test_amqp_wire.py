"""The hand-encoded ``basic.publish`` frames are what pamqp decodes as the intended publish."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import constants, frame
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from gateway.amqp_message import APP_ID, PERSISTENT, to_message, to_outgoing
from gateway.amqp_wire import (
    _MAX_CACHED_ENCODINGS,
    Outgoing,
    PublishEncoder,
    attribute_table,
    table_key,
)

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None)


def truncated(value: str, limit: int = 255) -> str:
    """``value`` cut to at most ``limit`` bytes of UTF-8, never splitting a character."""
    return value.encode()[:limit].decode(errors="ignore")


SHORT = st.text(max_size=255).map(truncated)
NONEMPTY_SHORT = SHORT.filter(bool)
HEADERS = st.dictionaries(st.text(max_size=40).map(lambda key: truncated(key, 128)), st.text())
BODIES = st.binary(max_size=600)
CHANNELS = st.integers(min_value=1, max_value=65535)
CHUNKS = st.integers(min_value=1, max_value=64) | st.integers(min_value=1, max_value=131064)
# pamqp can only encode exchange names its own validation accepts.
EXCHANGE_NAMES = st.from_regex(constants.DOMAIN_REGEX["exchange-name"], fullmatch=True).filter(
    lambda name: len(name) <= 127
)


class Decoded(NamedTuple):
    """One publish as pamqp read it back."""

    method: Basic.Publish
    header: ContentHeader
    body: bytes
    body_frame_sizes: list[int]
    channels: set[int]


def decode(data: bytes) -> Decoded:
    """Every frame in ``data`` through pamqp: one method, one header, then body frames."""
    frames: list[Any] = []
    channels: set[int] = set()
    offset = 0
    while offset < len(data):
        consumed, channel, value = frame.unmarshal(data[offset:])
        offset += consumed
        channels.add(channel)
        frames.append(value)
    assert offset == len(data)
    method, header, *bodies = frames
    assert isinstance(method, Basic.Publish)
    assert isinstance(header, ContentHeader)
    assert all(isinstance(part, ContentBody) for part in bodies)
    body = b"".join(part.value for part in bodies)
    return Decoded(method, header, body, [len(part.value) for part in bodies], channels)


def pamqp_time(seconds: int) -> datetime:
    """How pamqp decodes a timestamp: it reads values past 2106 as milliseconds."""
    return datetime.fromtimestamp(seconds if seconds <= 0xFFFFFFFF else seconds / 1000, UTC)


def table(headers: dict[str, str] | None) -> bytes:
    """``headers`` as the encoder takes them: a string table, or empty bytes for none."""
    if headers is None:
        return b""
    return attribute_table(headers, [(key, table_key(key)) for key in headers])


def message(exchange: str = "ex", routing_key: str = "rk", **fields: Any) -> Outgoing:
    """A small publish; ``fields`` override any other ``Outgoing`` field."""
    values: dict[str, Any] = {"body": b"{}", "content_type": "application/json"}
    values |= {"message_id": "m", "message_type": "t"} | fields
    return Outgoing(exchange, routing_key, **values)


@PROPERTY_SETTINGS
@given(
    exchange=SHORT,
    routing_key=SHORT,
    message_id=SHORT,
    message_type=SHORT,
    content_type=SHORT,
    app_id=SHORT,
    headers=st.none() | HEADERS,
    body=BODIES,
    channel=CHANNELS,
    chunk=CHUNKS,
    timestamp=st.integers(min_value=0, max_value=2**40),
    delivery_mode=st.sampled_from([1, 2]),
)
def test_publish_decodes_to_intended_message(
    exchange: str,
    routing_key: str,
    message_id: str,
    message_type: str,
    content_type: str,
    app_id: str,
    headers: dict[str, str] | None,
    body: bytes,
    channel: int,
    chunk: int,
    timestamp: int,
    delivery_mode: int,
) -> None:
    """Any publish decodes with pamqp to its exchange, routing key, properties and body."""
    encoder = PublishEncoder(channel, chunk, delivery_mode=delivery_mode, app_id=app_id)
    outgoing = Outgoing(
        exchange, routing_key, body, content_type, message_id, message_type, table(headers)
    )
    decoded = decode(encoder.encode(outgoing, timestamp))
    assert decoded.channels == {channel}
    method = decoded.method
    assert (method.exchange, method.routing_key) == (exchange, routing_key)
    assert (method.mandatory, method.immediate) == (False, False)
    assert decoded.header.body_size == len(body)
    properties = decoded.header.properties
    assert properties.content_type == content_type
    assert properties.delivery_mode == delivery_mode
    assert properties.message_id == message_id
    assert properties.message_type == message_type
    assert properties.timestamp == pamqp_time(timestamp)
    assert properties.app_id == app_id
    assert properties.headers == headers
    assert decoded.body == body
    assert all(0 < size <= chunk for size in decoded.body_frame_sizes)
    assert len(decoded.body_frame_sizes) == -(-len(body) // chunk)


@PROPERTY_SETTINGS
@given(
    exchange=EXCHANGE_NAMES,
    routing_key=SHORT,
    message_id=NONEMPTY_SHORT,
    message_type=NONEMPTY_SHORT,
    app_id=NONEMPTY_SHORT,
    headers=st.none() | HEADERS,
    body=BODIES,
    channel=CHANNELS,
    chunk=CHUNKS,
    timestamp=st.integers(min_value=0, max_value=0xFFFFFFFF),
)
def test_bytes_equal_pamqp_marshalling(
    exchange: str,
    routing_key: str,
    message_id: str,
    message_type: str,
    app_id: str,
    headers: dict[str, str] | None,
    body: bytes,
    channel: int,
    chunk: int,
    timestamp: int,
) -> None:
    """Where pamqp can encode the same publish (headers in its sorted order), bytes match."""
    headers = None if headers is None else dict(sorted(headers.items()))
    encoder = PublishEncoder(channel, chunk, delivery_mode=2, app_id=app_id)
    outgoing = Outgoing(
        exchange, routing_key, body, "text/plain", message_id, message_type, table(headers)
    )
    properties = Basic.Properties(
        content_type="text/plain",
        headers=headers,  # type: ignore[arg-type]
        delivery_mode=2,
        message_id=message_id,
        timestamp=datetime.fromtimestamp(timestamp, UTC),
        message_type=message_type,
        app_id=app_id,
    )
    expected = [
        frame.marshal(Basic.Publish(exchange=exchange, routing_key=routing_key), channel),
        frame.marshal(ContentHeader(0, len(body), properties), channel),
        *(
            frame.marshal(ContentBody(body[i : i + chunk]), channel)
            for i in range(0, len(body), chunk)
        ),
    ]
    assert encoder.encode(outgoing, timestamp) == b"".join(expected)


@pytest.mark.parametrize("field", ["exchange", "routing_key", "message_id", "message_type"])
@pytest.mark.parametrize("too_long", ["x" * 256, "é" * 128])
def test_short_string_over_255_bytes_raises(field: str, too_long: str) -> None:
    """A short string past 255 bytes of UTF-8 is refused, not truncated or wrapped."""
    encoder = PublishEncoder(1, 4096, delivery_mode=2, app_id="t")
    fits = message(**{field: truncated(too_long)})
    assert len(decode(encoder.encode(fits, 0)).body) == 2
    with pytest.raises(ValueError, match="255 bytes"):
        encoder.encode(message(**{field: too_long}), 0)


def test_app_id_over_255_bytes_raises() -> None:
    """The encoder refuses an app id that doesn't fit a short string."""
    with pytest.raises(ValueError, match="255 bytes"):
        PublishEncoder(1, 4096, delivery_mode=2, app_id="a" * 256)


def test_method_frame_cache_reuses_bytes_and_stays_bounded() -> None:
    """Cached method frames repeat exactly; past the bound, frames are built, not cached."""
    encoder = PublishEncoder(9, 4096, delivery_mode=2, app_id="t")
    first = encoder.encode(message("ex", "rk"), 1)
    cached = encoder._methods[("ex", "rk")]
    again = encoder.encode(message("ex", "rk", body=b"other"), 2)
    assert first.startswith(cached)
    assert again.startswith(cached)
    assert encoder._methods[("ex", "rk")] is cached
    for i in range(_MAX_CACHED_ENCODINGS + 20):
        routing_key = f"key.{i}"
        decoded = decode(encoder.encode(message("ex", routing_key, body=b"b"), i))
        assert (decoded.method.exchange, decoded.method.routing_key) == ("ex", routing_key)
        assert decoded.body == b"b"
        assert len(encoder._methods) <= _MAX_CACHED_ENCODINGS
    assert len(encoder._methods) == _MAX_CACHED_ENCODINGS
    assert ("ex", f"key.{_MAX_CACHED_ENCODINGS + 19}") not in encoder._methods
    assert decode(encoder.encode(message("ex", "rk"), 3)).method.routing_key == "rk"


def test_message_type_short_strings_are_cached_within_a_bound() -> None:
    """The type property's encoding is kept per type, at most ``_MAX_CACHED_ENCODINGS`` of them;
    past the bound a type is still encoded right, just not kept."""
    encoder = PublishEncoder(1, 4096, delivery_mode=2, app_id="a")
    for i in range(_MAX_CACHED_ENCODINGS + 20):
        decoded = decode(encoder.encode(message(message_type=f"type.{i}"), i))
        assert decoded.header.properties.message_type == f"type.{i}"
        assert len(encoder._message_types) <= _MAX_CACHED_ENCODINGS
    assert f"type.{_MAX_CACHED_ENCODINGS + 19}" not in encoder._message_types
    assert (
        decode(encoder.encode(message(message_type="type.0"), 0)).header.properties.message_type
        == "type.0"
    )
    with pytest.raises(ValueError, match="short string"):
        encoder.encode(message(message_type="t" * 256), 0)


EVENT = {
    "id": "abc",
    "source": "urn:x",
    "type": "org.example.t",
    "specversion": "1.0",
    "time": "2026-11-23T10:00:00Z",
    "partitionkey": "+3670000",
    "data": {"a": 1},
}
MINIMAL = {"id": 7, "source": "urn:ü", "type": "t", "specversion": "1.0", "partitionkey": None}


@pytest.mark.parametrize("event", [EVENT, MINIMAL], ids=["full", "minimal"])
@pytest.mark.parametrize("chunk", [16, 131064])
def test_to_outgoing_matches_to_message(event: dict[str, Any], chunk: int) -> None:
    """``to_outgoing``, encoded, decodes to the same properties and body as ``to_message``."""
    received = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
    expected = to_message(event, received)
    encoder = PublishEncoder(3, chunk, delivery_mode=PERSISTENT, app_id=APP_ID)
    decoded = decode(encoder.encode(to_outgoing("events", event), int(received.timestamp())))
    assert decoded.method.exchange == "events"
    assert decoded.method.routing_key == str(event["type"])
    properties, wanted = decoded.header.properties, expected.properties
    # aio-pika also sends priority 0 where the encoder sends none; brokers read both as 0.
    for name in set(properties.__slots__) - {"priority"}:
        assert getattr(properties, name) == getattr(wanted, name), name
    assert properties.headers == expected.headers
    assert (properties.content_type, properties.app_id) == (expected.content_type, APP_ID)
    assert (properties.message_id, properties.message_type) == (expected.message_id, expected.type)
    assert properties.delivery_mode == expected.delivery_mode
    assert properties.timestamp == received
    assert decoded.body == orjson.dumps(event) == expected.body
