"""``rate_limit``: a token bucket per source (rate per second, bursts up to twice that);
past it 429 + Retry-After and nothing kept, other sources unaffected."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aio_pika.abc import AbstractRobustConnection

from gateway.rate_limit import TokenBucket, retry_after
from gateway.settings import Source
from tests.broker import delete_everything, drain, message_count, unique_prefix
from tests.conftest import FIXTURES, Ingress, digest
from tests.source_support import ClientFactory, start_ingress


def test_bucket_allows_a_burst_of_twice_the_rate_then_refills() -> None:
    """rate 5/s: 10 at once, then one more every 0.2 s."""
    bucket = TokenBucket(5, now=100.0)
    assert [bucket.take(100.0) for _ in range(10)] == [0.0] * 10
    wait = bucket.take(100.0)
    assert wait == pytest.approx(0.2)
    assert bucket.take(100.2) == 0.0
    assert bucket.take(100.2) > 0
    assert [bucket.take(110.0) for _ in range(10)] == [0.0] * 10  # capped at the burst
    assert bucket.take(110.0) > 0


def test_slow_rates_still_let_one_through() -> None:
    """A rate under 1/s still admits one request, and says how long until the next."""
    bucket = TokenBucket(0.1, now=0.0)
    assert bucket.take(0.0) == 0.0
    assert bucket.take(0.0) == pytest.approx(10.0)


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    """Retry-After rounds up and is never 0."""
    assert retry_after(0.01) == "1"
    assert retry_after(1.0) == "1"
    assert retry_after(1.2) == "2"


BODY = (FIXTURES / "camara-roaming-on.json").read_bytes()
CE = "application/cloudevents+json"
TOKEN = {"Authorization": "Bearer t"}


@pytest.fixture
async def limited(
    aiohttp_client: ClientFactory, amqp: AbstractRobustConnection
) -> AsyncIterator[Ingress]:
    """A source limited to 0.5 requests/s (a burst of 1) and an unlimited one."""
    prefix = unique_prefix()
    sources = (
        Source("slow", "camara", (digest("t"),), rate_limit=0.5),
        Source("free", "camara", (digest("t"),)),
    )
    yield await start_ingress(aiohttp_client, prefix, amqp, sources)
    await delete_everything(prefix, extra_queues=[f"{prefix}.capture"])


async def test_over_the_rate_is_429_with_retry_after(limited: Ingress) -> None:
    """The request past the burst gets 429 + Retry-After; nothing is published or kept."""
    assert (await limited.post("slow", BODY, CE, **TOKEN))[0] == 204
    response = await limited.client.post(
        "/callbacks/slow", data=BODY, headers={"Content-Type": CE, **TOKEN}
    )
    assert response.status == 429
    assert response.content_type == "application/problem+json"
    assert 1 <= int(response.headers["Retry-After"]) <= 2
    assert (await limited.post("free", BODY, CE, **TOKEN))[0] == 204
    assert len(await drain(limited.channel, limited.capture, 2)) == 2
    assert await message_count(limited.channel, limited.capture) == 0
    assert await message_count(limited.channel, limited.rejected) == 0


async def test_unauthenticated_requests_do_not_use_up_the_budget(limited: Ingress) -> None:
    """401s are not counted: a stranger cannot starve the sender of its rate."""
    for _ in range(5):
        assert (await limited.post("slow", BODY, CE, Authorization="Bearer wrong"))[0] == 401
    assert (await limited.post("slow", BODY, CE, **TOKEN))[0] == 204
