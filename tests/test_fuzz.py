"""Property: whatever a sender posts, bad input is a 4xx (never a 5xx) and is never published."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.app import create_app
from gateway.cloudevent import CloudEvent
from gateway.publisher import Publisher
from tests.conftest import FIXTURES, TOKENS, make_settings


class RecordingPublisher:
    """The real publisher, plus a record of every event handed to it."""

    def __init__(self, real: Publisher) -> None:
        self.real = real
        self.published: list[CloudEvent] = []

    @property
    def ready(self) -> bool:
        return self.real.ready

    async def publish_events(self, events: list[CloudEvent], received: datetime) -> None:
        self.published.extend(events)
        await self.real.publish_events(events, received)

    async def publish_rejected(self, record: bytes, source: str, received: datetime) -> None:
        await self.real.publish_rejected(record, source, received)


@pytest.fixture
async def fuzz_client(
    aiohttp_client: Callable[..., Awaitable[TestClient]],  # type: ignore[type-arg]
    prefix: str,
) -> AsyncIterator[tuple[TestClient, RecordingPublisher]]:  # type: ignore[type-arg]
    settings = make_settings(prefix)
    real = Publisher(settings.amqp)
    real.start()
    await asyncio.wait_for(real.wait_ready(), 15)
    recorder = RecordingPublisher(real)
    client = await aiohttp_client(create_app(settings, publisher=recorder))
    yield client, recorder
    await real.close()


FIXTURE_BODIES = [json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def mutated_fixture(draw: st.DrawFn) -> bytes:
    """A real payload with some members dropped or replaced by arbitrary JSON."""
    body: dict[str, Any] = dict(draw(st.sampled_from(FIXTURE_BODIES)))
    for key in draw(st.lists(st.sampled_from(sorted(body)), max_size=3, unique=True)):
        if draw(st.booleans()):
            del body[key]
        else:
            body[key] = draw(json_values)
    return json.dumps(body).encode()


bodies = st.one_of(
    st.binary(max_size=300), mutated_fixture(), json_values.map(lambda v: json.dumps(v).encode())
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
        "text/plain",
        "application/json; charset=utf-8",
        "",
    ]
) | st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30)
ce_headers = st.dictionaries(
    st.sampled_from(["ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", "ce-x"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
    max_size=5,
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    source=st.sampled_from(sorted(TOKENS)),
    body=bodies,
    content_type=content_types,
    extra=ce_headers,
)
async def test_bad_input_is_never_5xx_nor_published(
    fuzz_client: tuple[TestClient, RecordingPublisher],  # type: ignore[type-arg]
    source: str,
    body: bytes,
    content_type: str,
    extra: dict[str, str],
) -> None:
    """Any body and headers: 204 with events published, or a 4xx problem with none."""
    client, recorder = fuzz_client
    before = len(recorder.published)
    headers = {"Authorization": f"Bearer {TOKENS[source]}", **extra}
    if content_type:
        headers["Content-Type"] = content_type
    response = await client.post(f"/callbacks/{source}", data=body, headers=headers)
    assert response.status in (204, 400, 413, 415), await response.text()
    if response.status == 204:
        return
    assert response.content_type == "application/problem+json"
    assert len(recorder.published) == before
