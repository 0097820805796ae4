"""Property: whatever a sender posts, the answer is 2xx, 4xx, 429 or 503, never a 500, never an
unhandled exception in the log, and nothing is published unless the answer is 2xx.

Thousands of requests through the real aiohttp app (``create_app``, a real TCP test server),
with a recording publisher in place of the broker, so the run stays fast and deterministic
(a fixed seed, no example database). Headers (``Authorization``, ``access_token``, ``ce-*``,
content types) and bodies (real payloads mutated, CloudEvents with hostile attributes,
batches, arbitrary bytes) are all drawn; the publisher also fails now and then (503). The
same attacks against the real broker are in ``tests/test_hostile_attributes.py``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from gateway.app import create_app
from gateway.cloudevent import CloudEvent
from gateway.publisher import BrokerUnavailable
from tests.conftest import FIXTURES, TOKENS, make_settings

EXAMPLES = 2500
ALLOWED = frozenset({200, 202, 204, 400, 401, 403, 404, 405, 413, 415, 429, 503})
FRAME_MAX = 4096  # small, so the exact header-frame check runs too


class RecordingPublisher:
    """A publisher that records what it is given; ``available`` False makes it fail (503)."""

    def __init__(self) -> None:
        self.published: list[CloudEvent] = []
        self.rejected = 0
        self.available = True

    @property
    def ready(self) -> bool:
        return self.available

    @property
    def frame_max(self) -> int:
        return FRAME_MAX

    async def publish_events(self, events: list[CloudEvent], received: datetime) -> None:
        if not self.available:
            raise BrokerUnavailable("the fuzz broker is down")
        self.published.extend(events)

    async def publish_rejected(self, record: bytes, source: str, received: datetime) -> None:
        if not self.available:
            raise BrokerUnavailable("the fuzz broker is down")
        self.rejected += 1


@pytest.fixture
async def fuzz_client(
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
) -> tuple[TestClient, RecordingPublisher]:  # type: ignore[type-arg]
    recorder = RecordingPublisher()
    client = await aiohttp_client(create_app(make_settings("fuzz"), publisher=recorder))
    return client, recorder


FIXTURE_BODIES = [json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))]
HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
NASTY_TEXT = st.sampled_from(
    ["", "\x00", "a\x00b", "\x01", "line\nbreak", "\x7f", "\u0085", "\ufffe", "é", "電話"]
) | st.text(max_size=12)
BIG_TEXT = st.integers(min_value=250, max_value=6000).map(lambda n: "x" * n)
TIMES = st.sampled_from(
    [
        "2023-01-17T13:18:23.682Z",
        "2024-06-01T13:00:00.123456789+02:00",
        "2024-06-01T13:00:00.1234567891Z",
        "9999-12-31T23:00:00-05:00",
        "9999-12-31T23:59:59Z",
        "0001-01-01T00:00:00+01:00",
        "0000-01-01T00:00:00Z",
        "2999-01-01T00:00:00Z",
        "2023-02-30T00:00:00Z",
        "2023-01-17T13:18:23." + "1" * 5000 + "Z",
    ]
) | st.text(max_size=25)
JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | NASTY_TEXT
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(NASTY_TEXT, children, max_size=4)
    ),
    max_leaves=12,
)
ATTRIBUTE_VALUES = JSON_VALUES | BIG_TEXT | TIMES
ATTRIBUTE_NAMES = st.sampled_from(
    [
        "id",
        "source",
        "type",
        "specversion",
        "time",
        "subject",
        "partitionkey",
        "dataschema",
        "datacontenttype",
        "data",
        "data_base64",
        "gatewaysource",
        "comexampleext",
        "comExample",
        "x-y",
    ]
) | st.text(max_size=10)


@st.composite
def cloudevent(draw: st.DrawFn) -> dict[str, Any]:
    """A CloudEvent that is mostly valid, with a few attributes made hostile."""
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": draw(st.text(min_size=1, max_size=20) | st.integers() | BIG_TEXT),
        "source": draw(st.sampled_from(["/partner", "urn:x"]) | BIG_TEXT),
        "type": draw(st.sampled_from(["com.example.x", "org.camaraproject.qod.v0.x"])),
    }
    if draw(st.booleans()):
        event["time"] = draw(TIMES)
    if draw(st.booleans()):
        event["data"] = draw(
            JSON_VALUES
            | st.fixed_dictionaries(
                {
                    "device": st.fixed_dictionaries(
                        {"phoneNumber": NASTY_TEXT | BIG_TEXT | st.integers()}
                    )
                }
            )
        )
    for name in draw(st.lists(ATTRIBUTE_NAMES, max_size=4)):
        event[name] = draw(ATTRIBUTE_VALUES)
    if draw(st.integers(min_value=0, max_value=20)) == 0:
        event.update({f"ext{n}": n for n in range(70)})
    return event


@st.composite
def mutated_fixture(draw: st.DrawFn) -> Any:
    """A real payload with some members dropped or replaced by arbitrary JSON."""
    body: dict[str, Any] = dict(draw(st.sampled_from(FIXTURE_BODIES)))
    for key in draw(st.lists(st.sampled_from(sorted(body)), max_size=3, unique=True)):
        if draw(st.booleans()):
            del body[key]
        else:
            body[key] = draw(ATTRIBUTE_VALUES)
    return body


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def mostly(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``common`` about four times in five, else ``rare``."""
    return st.integers(min_value=0, max_value=4).flatmap(lambda n: rare if n == 3 else common)


STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
# (body, the content type that fits it) for each kind of body.
SHAPED_BODIES = st.one_of(
    st.tuples(cloudevent().map(_dumps), st.sampled_from([STRUCTURED, "application/json"])),
    st.tuples(st.lists(cloudevent(), max_size=4).map(_dumps), st.just(BATCH)),
    st.tuples(mutated_fixture().map(_dumps), st.sampled_from(["application/json", STRUCTURED])),
    st.tuples(JSON_VALUES.map(_dumps), st.just("application/json")),
    st.tuples(st.binary(max_size=300), st.just("application/octet-stream")),
)
OTHER_CONTENT_TYPES = (
    st.sampled_from(
        [
            "application/json",
            STRUCTURED,
            BATCH,
            STRUCTURED + "; charset=utf-8",
            "text/plain",
            "application/octet-stream",
            "",
        ]
    )
    | HEADER_TEXT
)
CE_HEADERS = st.dictionaries(
    st.sampled_from(
        ["ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", "ce-partitionkey"]
    )
    | st.from_regex(r"ce-[A-Za-z0-9-]{0,12}", fullmatch=True),
    st.sampled_from(["1.0", "%00", "%FF", "%E2%82%AC", "a b", "9999-12-31T23:00:00-05:00"])
    | HEADER_TEXT,
    max_size=5,
)
BINARY_MODE = st.fixed_dictionaries(
    {
        "ce-specversion": st.just("1.0"),
        "ce-id": HEADER_TEXT.filter(bool),
        "ce-source": st.just("/partner"),
        "ce-type": st.just("com.example.x"),
    }
)
SOURCES = st.sampled_from([*sorted(TOKENS), "open", "unknown"])


@st.composite
def credentials(draw: st.DrawFn, source: str) -> tuple[dict[str, str], dict[str, str]]:
    """(headers, query) carrying a right, wrong, malformed or no credential for ``source``."""
    token = TOKENS.get(source, "nothing")
    kind = draw(
        mostly(
            st.sampled_from(["bearer", "double", "query"]),
            st.sampled_from(["wrong", "garbage", "none"]),
        )
    )
    if kind == "bearer":
        return {"Authorization": f"Bearer {token}"}, {}
    if kind == "double":
        return {"Authorization": f"Bearer Bearer {token}"}, {}
    if kind == "query":
        return {}, {"access_token": token}
    if kind == "wrong":
        return {"Authorization": f"Bearer {token}x"}, {}
    if kind == "garbage":
        return {"Authorization": draw(HEADER_TEXT)}, {}
    return {}, {}


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, dict[str, str], dict[str, str], bytes]:
    """(source, headers, query, body): credentials, content type, ce-* headers and body."""
    source = draw(SOURCES)
    headers, query = draw(credentials(source))
    body, content_type = draw(SHAPED_BODIES)
    content_type = draw(mostly(st.just(content_type), OTHER_CONTENT_TYPES))
    if content_type:
        headers["Content-Type"] = content_type
    headers.update(draw(mostly(st.just({}), BINARY_MODE)))
    headers.update(draw(mostly(st.just({}), CE_HEADERS)))
    return source, headers, query, body


@seed(20261130)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    request=requests(),
    broker_up=mostly(st.just(True), st.just(False)),
)
async def test_any_request_is_answered_without_a_5xx_bug(
    fuzz_client: tuple[TestClient, RecordingPublisher],  # type: ignore[type-arg]
    caplog: pytest.LogCaptureFixture,
    request: tuple[str, dict[str, str], dict[str, str], bytes],
    broker_up: bool,
) -> None:
    """Any headers and body: 2xx with events published, else 4xx/429/503 problem+json with
    none; never a 500 and never an error logged."""
    client, recorder = fuzz_client
    recorder.available = broker_up
    source, headers, query, body = request
    before = len(recorder.published)
    caplog.clear()
    with caplog.at_level(logging.ERROR), capture_logs() as logs:
        response = await client.post(
            f"/callbacks/{source}", data=body, headers=headers, params=query
        )
        text = await response.text()
    assert response.status in ALLOWED, text
    errors = [entry for entry in logs if entry.get("log_level") in ("error", "critical")]
    assert not errors, errors
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    if 200 <= response.status < 300:
        return
    assert response.content_type == "application/problem+json"
    assert len(recorder.published) == before
