"""The ingress end to end: real HTTP server, real RabbitMQ, the official CloudEvents SDK."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from aio_pika.abc import AbstractRobustConnection
from aiormq.exceptions import ChannelPreconditionFailed
from cloudevents.core.bindings.rabbitmq import RabbitMQMessage, from_rabbitmq_event

from gateway.topology import declare_ingress
from tests.broker import drain, message_count
from tests.conftest import (
    FIXTURES,
    TOKENS,
    Ingress,
    fixture_content_type,
    fixture_source,
)
from tests.worker_support import eventually

ALL_FIXTURES = sorted(FIXTURES.glob("*.json"))


@pytest.mark.parametrize("fixture", ALL_FIXTURES, ids=[f.stem for f in ALL_FIXTURES])
async def test_every_fixture_comes_out_as_a_cloudevent(ingress: Ingress, fixture: Path) -> None:
    """Each real payload is answered 204 and lands on the exchange as an SDK-readable event."""
    body = fixture.read_bytes()
    status, _ = await ingress.post(fixture_source(fixture), body, fixture_content_type(fixture))
    assert status == 204
    [message] = await drain(ingress.channel, ingress.capture, 1)

    event = from_rabbitmq_event(
        RabbitMQMessage(
            headers={k: str(v) for k, v in (message.headers or {}).items()},
            content_type=message.content_type,
            body=message.body,
        )
    )
    original = json.loads(body)
    assert event.get_specversion() == "1.0"
    assert event.get_time() is not None
    if "specversion" in original:
        assert event.get_id() == str(original["id"])
        assert event.get_type() == original["type"]
        assert event.get_source() == original["source"]
        assert event.get_data() == original.get("data")
        assert event.get_time() == datetime.fromisoformat(original["time"])
    else:
        assert event.get_data() == original
        assert event.get_source() == f"/callbacks/{fixture_source(fixture)}"
    assert message.message_id == event.get_id()
    assert message.type == event.get_type()
    assert message.routing_key == event.get_type()
    assert message.app_id == "event-gateway"
    assert message.delivery_mode == 2
    assert message.content_type == "application/cloudevents+json"
    assert (message.headers or {})["ce-id"] == event.get_id()
    structured = orjson.loads(message.body)
    assert structured["gatewaysource"] == fixture_source(fixture)
    assert "gatewayreceived" in structured


async def test_notify_receipt_ids_are_per_status_and_stable(ingress: Ingress) -> None:
    """A Notify receipt's id is "<id>:<status>": stable on resend, new for a new status."""
    receipt = json.loads((FIXTURES / "notify-delivery-email-delivered.json").read_text())
    sms = {**receipt, "notification_type": "sms", "to": "+61412345678"}
    for status in ("sending", "delivered", "delivered"):
        code, _ = await ingress.post("notify-status", orjson.dumps({**sms, "status": status}))
        assert code == 204
    messages = await drain(ingress.channel, ingress.capture, 3)
    ids = [m.message_id for m in messages]
    assert ids == [f"{sms['id']}:sending", f"{sms['id']}:delivered", f"{sms['id']}:delivered"]
    assert {m.routing_key for m in messages} == {"notify.sms.delivery-status"}
    assert orjson.loads(messages[0].body)["partitionkey"] == sms["id"]


async def test_batch_is_published_whole(ingress: Ingress) -> None:
    """A batch of CloudEvents is answered 204 only with every event on the queue."""
    events = [
        {**json.loads((FIXTURES / "camara-roaming-on.json").read_text()), "id": f"b-{i}"}
        for i in range(5)
    ]
    status, _ = await ingress.post(
        "cloudevents", orjson.dumps(events), "application/cloudevents-batch+json"
    )
    assert status == 204
    messages = await drain(ingress.channel, ingress.capture, 5)
    assert sorted(m.message_id or "" for m in messages) == [f"b-{i}" for i in range(5)]


async def test_bad_batch_publishes_nothing(ingress: Ingress) -> None:
    """One invalid event fails the whole batch with 400 naming it; nothing is published."""
    good = json.loads((FIXTURES / "camara-roaming-on.json").read_text())
    bad = {k: v for k, v in good.items() if k != "id"}
    status, body = await ingress.post(
        "cloudevents", orjson.dumps([good, bad]), "application/cloudevents-batch+json"
    )
    assert status == 400
    assert "id" in orjson.loads(body)["detail"] + str(orjson.loads(body).get("field"))
    assert await message_count(ingress.channel, ingress.capture) == 0


async def test_unrouted_events_are_kept(ingress: Ingress) -> None:
    """An event no queue is bound for lands on <prefix>.unrouted, never dropped."""
    capture = await ingress.channel.get_queue(ingress.capture, ensure=False)
    await capture.unbind(ingress.settings.amqp.exchange, "#")
    body = (FIXTURES / "notify-delivery-email-delivered.json").read_bytes()
    assert (await ingress.post("notify-status", body))[0] == 204
    [message] = await drain(ingress.channel, f"{ingress.settings.amqp.exchange}.unrouted", 1)
    assert message.routing_key == "notify.email.delivery-status"


BAD_INPUT = [
    # (source, content type, body, status, field or None)
    ("camara", "application/json", b"{not json", 400, None),
    (
        "camara",
        "application/cloudevents+json",
        b'{"specversion":"1.0","source":"/s","type":"t"}',
        400,
        "id",
    ),
    (
        "camara",
        "application/cloudevents+json",
        b'{"id":"1","specversion":"1.0","type":"t"}',
        400,
        "source",
    ),
    (
        "camara",
        "application/cloudevents+json",
        b'{"id":"1","specversion":"0.3","source":"/s","type":"t"}',
        400,
        "specversion",
    ),
    ("camara", "text/plain", b"hello", 415, None),
    ("cloudevents", "application/json", b'{"id":"1","source":"/s","type":"t"}', 400, "specversion"),
    ("notify-status", "application/json", b'{"id":"x","notification_type":"sms"}', 400, "status"),
    ("notify-status", "application/xml", b"<a/>", 415, None),
    ("notify-inbound", "application/json", b"[1,2]", 400, None),
]


@pytest.mark.parametrize(("source", "ctype", "body", "status", "field"), BAD_INPUT)
async def test_bad_input_gets_a_problem_and_is_kept(
    ingress: Ingress, source: str, ctype: str, body: bytes, status: int, field: str | None
) -> None:
    """Bad input gets its 4xx as problem+json, is not published, and is kept on .rejected."""
    response = await ingress.client.post(
        f"/callbacks/{source}",
        data=body,
        headers={"Content-Type": ctype, "Authorization": f"Bearer {TOKENS[source]}"},
    )
    assert response.status == status
    assert response.content_type == "application/problem+json"
    problem = await response.json(content_type=None)
    assert problem["status"] == status
    assert problem["title"]
    assert problem["detail"]
    assert problem["type"]
    if field is not None:
        assert problem.get("field") == field
    assert await message_count(ingress.channel, ingress.capture) == 0
    [kept] = await drain(ingress.channel, ingress.rejected, 1)
    record = orjson.loads(kept.body)
    assert record["source"] == source
    assert record["status"] == status
    assert record["reason"] == problem["detail"]
    assert record["body"] == body.decode()
    assert "Authorization" not in record["headers"]
    assert TOKENS[source] not in kept.body.decode()


async def test_too_large_body_is_413_and_kept_without_body(ingress: Ingress) -> None:
    """A body over max_body_bytes gets 413; the rejected record carries no body."""
    body = b'{"pad":"' + b"x" * 70000 + b'"}'
    status, problem = await ingress.post("camara", body, "application/cloudevents+json")
    assert status == 413
    assert orjson.loads(problem)["status"] == 413
    [kept] = await drain(ingress.channel, ingress.rejected, 1)
    record = orjson.loads(kept.body)
    assert record["status"] == 413
    assert "body" not in record
    assert "body_base64" not in record


async def test_non_utf8_rejected_body_is_kept_as_base64(ingress: Ingress) -> None:
    """A rejected body that is not UTF-8 is kept as body_base64."""
    status, _ = await ingress.post("camara", b"\xff\xfe\x00", "application/json")
    assert status == 400
    [kept] = await drain(ingress.channel, ingress.rejected, 1)
    assert orjson.loads(kept.body)["body_base64"] == "//4A"


async def test_id_too_long_is_400_and_kept(ingress: Ingress) -> None:
    """An id over 1024 bytes (§7) is a 400 on ``id``, kept, not a 500."""
    event = {"specversion": "1.0", "id": "x" * 1025, "source": "urn:a", "type": "org.x.y"}
    status, body = await ingress.post("camara", orjson.dumps(event), "application/cloudevents+json")
    assert status == 400
    assert orjson.loads(body)["field"] == "id"
    [kept] = await drain(ingress.channel, ingress.rejected, 1)
    assert orjson.loads(kept.body)["status"] == 400
    assert await message_count(ingress.channel, ingress.capture) == 0


@pytest.mark.parametrize("header", ["ce-id", "ce-source", "ce-type", "ce-partitionkey"])
async def test_non_utf8_binary_mode_header_is_400_and_kept(ingress: Ingress, header: str) -> None:
    """A ce-* header that is not UTF-8 is a 400 (not a 500), kept with the bytes escaped."""
    attributes = {
        "ce-id": b"1",
        "ce-source": b"urn:a",
        "ce-type": b"org.x",
        "ce-specversion": b"1.0",
    }
    attributes[header] = b"ab\xffcd"
    body = b'{"a":1}'
    request = b"".join(
        [
            b"POST /callbacks/camara HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n",
            b"Content-Type: application/json\r\n",
            f"Authorization: Bearer {TOKENS['camara']}\r\n".encode(),
            *(name.encode() + b": " + value + b"\r\n" for name, value in attributes.items()),
            b"Content-Length: %d\r\n\r\n" % len(body),
            body,
        ]
    )
    assert ingress.client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", ingress.client.port)
    writer.write(request)
    response = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert response.startswith(b"HTTP/1.1 400 ")
    [kept] = await drain(ingress.channel, ingress.rejected, 1)
    assert orjson.loads(kept.body)["headers"][header] == "ab\\xffcd"
    assert await message_count(ingress.channel, ingress.capture) == 0


async def test_unknown_source_is_404_problem(ingress: Ingress) -> None:
    """An unknown source is 404 problem+json and nothing is kept or published."""
    response = await ingress.client.post("/callbacks/nope", data=b"{}")
    assert response.status == 404
    assert response.content_type == "application/problem+json"
    assert await message_count(ingress.channel, ingress.rejected) == 0


async def test_wrong_method_is_405_problem(ingress: Ingress) -> None:
    """GET on a callback URL is a 405 problem naming the allowed methods."""
    response = await ingress.client.get("/callbacks/camara")
    assert response.status == 405
    assert response.content_type == "application/problem+json"
    assert {"POST", "OPTIONS"} <= set(response.headers["Allow"].replace(" ", "").split(","))


async def test_webhook_validation_handshake(ingress: Ingress) -> None:
    """OPTIONS answers the CloudEvents handshake without a token and publishes nothing."""
    response = await ingress.client.options(
        "/callbacks/camara",
        headers={
            "WebHook-Request-Origin": "eventemitter.example.com",
            "WebHook-Request-Rate": "120",
        },
    )
    assert response.status == 200
    assert response.headers["WebHook-Allowed-Origin"] == "eventemitter.example.com"
    assert response.headers["WebHook-Allowed-Rate"] == "120"
    assert await message_count(ingress.channel, ingress.capture) == 0


async def test_health_ready_and_metrics(ingress: Ingress) -> None:
    """/healthz and /readyz are 200 while connected; /metrics counts requests and publishes."""
    assert (await ingress.client.get("/healthz")).status == 200
    assert (await ingress.client.get("/readyz")).status == 200
    body = (FIXTURES / "camara-roaming-status.json").read_bytes()
    await ingress.post("camara", body, "application/cloudevents+json")
    await ingress.post("camara", body, "application/cloudevents+json", Authorization="Bearer no")
    metrics = await (await ingress.client.get("/metrics")).text()
    assert 'gateway_requests_total{source="camara",status="204"} 1.0' in metrics
    assert 'gateway_requests_total{source="camara",status="401"} 1.0' in metrics
    assert 'gateway_publish_total{result="confirmed"} 1.0' in metrics
    assert "gateway_broker_connected 1.0" in metrics
    assert "gateway_request_duration_seconds_bucket" in metrics


async def test_quorum_is_the_default_queue_type(
    ingress: Ingress, amqp: AbstractRobustConnection
) -> None:
    """The unrouted and rejected queues are quorum queues unless configured otherwise."""
    probe = await amqp.channel()
    with pytest.raises(ChannelPreconditionFailed):
        await probe.declare_queue(
            ingress.rejected, durable=True, arguments={"x-queue-type": "classic"}
        )


async def test_a_channel_closed_by_the_broker_is_503_then_recovers(
    ingress: Ingress, amqp: AbstractRobustConnection
) -> None:
    """When the broker closes the publishing channel (here: its exchange was deleted), the
    request gets 503, not 500; once the exchange is back, events are accepted again."""
    body = (FIXTURES / "camara-roaming-status.json").read_bytes()
    channel = await amqp.channel()
    await channel.exchange_delete(ingress.settings.amqp.exchange)
    status, problem = await ingress.post("camara", body, "application/cloudevents+json")
    assert status == 503
    assert orjson.loads(problem)["status"] == 503
    exchange = await declare_ingress(channel, ingress.settings.amqp)
    await (await channel.get_queue(ingress.capture)).bind(exchange, routing_key="#")

    async def accepted() -> bool:
        status, _ = await ingress.post("camara", body, "application/cloudevents+json")
        assert status in (204, 503)
        return status == 204

    await eventually(accepted, 10, "a 204 after the exchange is back")
    assert await drain(ingress.channel, ingress.capture, 1)
