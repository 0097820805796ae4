"""A credential opens one door (§8), against the real server and broker: the types a source
may send, the expired token kept, one 401 for every failure, nothing secret in the logs."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from aio_pika.abc import AbstractRobustConnection

from gateway.settings import Source, TokenDigest, load_settings
from tests.broker import delete_everything, drain, message_count, unique_prefix
from tests.conftest import FIXTURES, Ingress, digest
from tests.source_support import ClientFactory, start_ingress

CE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
ROAMING_ON = json.loads((FIXTURES / "camara-roaming-on.json").read_text())
SPOOF = {**ROAMING_ON, "id": "spoof-1", "type": "notify.sms.delivery-status"}
EXPIRED_TOKEN = "camara-token-expired"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def secured(
    aiohttp_client: ClientFactory, amqp: AbstractRobustConnection
) -> AsyncIterator[Ingress]:
    """An ingress with a camara source, a narrow partner source and a Notify source."""
    prefix = unique_prefix()
    expired = TokenDigest(digest(EXPIRED_TOKEN).digest, datetime.now(UTC) - timedelta(minutes=1))
    sources = (
        Source("camara", "camara", (digest("camara-token"), expired)),
        Source("partner", "cloudevents", (digest("partner-token"),), types=("com.example.#",)),
        Source("anything", "cloudevents", (digest("anything-token"),)),
        Source("notify-status", "notify-delivery-status", (digest("notify-token"),)),
    )
    yield await start_ingress(aiohttp_client, prefix, amqp, sources)
    await delete_everything(prefix, extra_queues=[f"{prefix}.capture"])


async def test_camara_token_cannot_send_notify_events(secured: Ingress) -> None:
    """The cross-source spoof: a camara token sending notify.* is 403 naming type, kept,
    and nothing is published."""
    status, body = await secured.post("camara", orjson.dumps(SPOOF), CE, **_bearer("camara-token"))
    assert status == 403
    problem = orjson.loads(body)
    assert problem["field"] == "type"
    assert "notify.sms.delivery-status" in problem["detail"]
    assert await message_count(secured.channel, secured.capture) == 0
    [kept] = await drain(secured.channel, secured.rejected, 1)
    record = orjson.loads(kept.body)
    assert record["status"] == 403
    assert record["source"] == "camara"
    assert orjson.loads(record["body"])["id"] == "spoof-1"
    assert "Authorization" not in record["headers"]


@pytest.mark.parametrize(
    ("source", "token", "event_type", "status"),
    [
        ("anything", "anything-token", "notify.sms.delivery-status", 403),
        ("anything", "anything-token", "notify.sms.inbound", 403),
        ("anything", "anything-token", "com.other.thing", 204),
        ("partner", "partner-token", "com.example.thing.created", 204),
        ("partner", "partner-token", "com.example", 204),
        ("partner", "partner-token", "com.examples.thing", 403),
        ("partner", "partner-token", ROAMING_ON["type"], 403),
        ("camara", "camara-token", "com.example.thing", 403),
        ("camara", "camara-token", ROAMING_ON["type"], 204),
    ],
)
async def test_types_a_source_may_send(
    secured: Ingress, source: str, token: str, event_type: str, status: int
) -> None:
    """Each source sends only its `types` (topic patterns); notify.* is Notify's alone."""
    event = {**ROAMING_ON, "type": event_type}
    got, _ = await secured.post(source, orjson.dumps(event), CE, **_bearer(token))
    assert got == status
    if status == 204:
        assert len(await drain(secured.channel, secured.capture, 1)) == 1
    else:
        assert await message_count(secured.channel, secured.capture) == 0


async def test_a_batch_with_one_forbidden_event_publishes_nothing(secured: Ingress) -> None:
    """One event of a type the source may not send fails the whole batch with 403."""
    good = {**ROAMING_ON, "id": "b-1", "type": "com.example.a"}
    bad = {**ROAMING_ON, "id": "b-2", "type": "com.elsewhere.b"}
    status, body = await secured.post(
        "partner", orjson.dumps([good, bad]), BATCH, **_bearer("partner-token")
    )
    assert status == 403
    assert "com.elsewhere.b" in orjson.loads(body)["detail"]
    assert await message_count(secured.channel, secured.capture) == 0
    assert len(await drain(secured.channel, secured.rejected, 1)) == 1


async def test_expired_token_is_401_and_its_request_is_kept(secured: Ingress) -> None:
    """A token that matches but has expired: 401, and the request is kept as `token expired`."""
    ended = {**ROAMING_ON, "id": "ended-1"}
    status, body = await secured.post("camara", orjson.dumps(ended), CE, **_bearer(EXPIRED_TOKEN))
    wrong_status, wrong_body = await secured.post(
        "camara", orjson.dumps(ended), CE, **_bearer("not-a-token")
    )
    assert (status, wrong_status) == (401, 401)
    assert body == wrong_body  # the same generic answer whatever was wrong
    assert await message_count(secured.channel, secured.capture) == 0
    [kept] = await drain(secured.channel, secured.rejected, 1)
    record = orjson.loads(kept.body)
    assert record["reason"] == "token expired"
    assert record["status"] == 401
    assert orjson.loads(record["body"])["id"] == "ended-1"
    assert "Authorization" not in record["headers"]
    assert EXPIRED_TOKEN not in kept.body.decode()
    assert await message_count(secured.channel, secured.rejected) == 0  # the wrong one: not kept


async def test_every_auth_failure_gets_the_same_401(secured: Ingress) -> None:
    """Missing, malformed, wrong and other-source tokens all get one identical answer."""
    answers = set()
    for headers in (
        {},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer"},
        _bearer("wrong"),
        _bearer("notify-token"),
        _bearer("x" * 5000),
    ):
        response = await secured.client.post(
            "/callbacks/camara",
            data=orjson.dumps(ROAMING_ON),
            headers={"Content-Type": CE, **headers},
        )
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        answers.add(await response.read())
    assert len(answers) == 1
    assert await message_count(secured.channel, secured.capture) == 0


async def test_tokens_never_reach_the_log(
    secured: Ingress, capsys: pytest.CaptureFixture[str]
) -> None:
    """Neither a good, an expired nor a wrong token (header or query) appears in any log line."""
    body = orjson.dumps(ROAMING_ON)
    await secured.post("camara", body, CE, **_bearer("camara-token"))
    await secured.post("camara", body, CE, **_bearer(EXPIRED_TOKEN))
    await secured.post("camara", body, CE, **_bearer("wrong-secret-token"))
    await secured.client.post(
        "/callbacks/camara?access_token=query-secret-token",
        data=body,
        headers={"Content-Type": CE},
    )
    out = capsys.readouterr()
    logged = out.out + out.err
    assert "callback" in logged or "event accepted" in logged
    for secret in ("camara-token", EXPIRED_TOKEN, "wrong-secret-token", "query-secret-token"):
        assert secret not in logged


def test_readme_securing_a_source_example_loads(tmp_path: Path) -> None:
    """The README's worked config for each kind of sender is a valid config."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Securing a source", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    example = example.replace("<64 hex digits>", "ab" * 32)
    example = re.sub(r"whsec_<[^>]*>", "whsec_" + base64.b64encode(b"k" * 24).decode(), example)
    config = tmp_path / "gateway.toml"
    config.write_text(example, encoding="utf-8")
    settings = load_settings(config, env={})
    auths = {source.name: source.auth for source in settings.sources}
    assert auths == {
        "camara": "bearer",
        "camara-jwt": "jwt",
        "notify-status": "bearer",
        "partner": "standard-webhooks",
        "camara-open": "none",
    }
