"""The fenced fast path: the standard aio-pika path publishes the same messages, and a fast path
broken by an (simulated) aiormq change falls back to it instead of failing requests."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from aiormq.channel import Channel

from gateway.app import METRICS, PUBLISHER
from gateway.publisher import Publisher
from tests.broker import drain
from tests.conftest import FIXTURES, Ingress, IngressFactory

TEMPLATE = json.loads((FIXTURES / "camara-roaming-status.json").read_text())
CONTENT_TYPE = "application/cloudevents+json"


def _event(event_id: str) -> bytes:
    return json.dumps({**TEMPLATE, "id": event_id}).encode()


def _publisher(ingress: Ingress) -> Publisher:
    publisher = ingress.client.app[PUBLISHER]
    assert isinstance(publisher, Publisher)
    return publisher


def _fallbacks(ingress: Ingress) -> float:
    for family in ingress.client.app[METRICS].collect():
        if family.name == "event_gateway_publisher_fallbacks":
            return float(family.samples[0].value)
    raise AssertionError("no event_gateway_publisher_fallbacks metric")


async def _post_and_expect(ingress: Ingress, *event_ids: str) -> None:
    for event_id in event_ids:
        status, body = await ingress.post("camara", _event(event_id), CONTENT_TYPE)
        assert status == 204, body
    stored = await drain(ingress.channel, ingress.capture, len(event_ids))
    assert [message.message_id for message in stored] == list(event_ids)


async def test_standard_publisher_sends_the_same_message_as_the_fast_one(
    make_ingress: IngressFactory,
) -> None:
    """``publisher = "standard"`` answers 204 after the confirm, and its message has the same
    properties and headers as the fast path's."""
    fast = await make_ingress()
    standard = await make_ingress(publisher="standard")
    assert _publisher(fast).publisher == "fast"
    assert _publisher(standard).publisher == "standard"
    for ingress, event_id in ((fast, "same-1"), (standard, "same-2")):
        status, body = await ingress.post("camara", _event(event_id), CONTENT_TYPE)
        assert status == 204, body
    first, second = await drain(fast.channel, fast.capture, 2)

    def shape(message: Any) -> dict[str, Any]:
        return {
            "routing_key": message.routing_key,
            "content_type": message.content_type,
            "delivery_mode": message.delivery_mode,
            "type": message.type,
            "app_id": message.app_id,
            "timestamp": message.timestamp is not None,
            "headers": {k: v for k, v in message.headers.items() if k != "ce-id"},
            "attributes": sorted(json.loads(message.body)),  # values: id and receive times
            "data": json.loads(message.body)["data"],
        }

    assert (first.message_id, second.message_id) == ("same-1", "same-2")
    assert shape(first) == shape(second)
    assert second.headers["ce-id"] == "same-2"
    assert (await standard.client.get("/readyz")).status == 200
    assert _fallbacks(standard) == 0


async def test_a_fast_path_error_at_run_time_falls_back_instead_of_a_500(
    make_ingress: IngressFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An aiormq internal that stops working under a running ingress (here the channel's
    ``confirmations``, where each publish registers its confirm) gives 204 through the
    standard path, counted in the metric; ready."""
    ingress = await make_ingress()
    publisher = _publisher(ingress)
    await _post_and_expect(ingress, "before-1")
    stream = publisher._stream
    assert stream is not None

    class Broken(dict[int, Any]):
        def __setitem__(self, key: int, value: Any) -> None:
            raise RuntimeError("simulated aiormq change")

    monkeypatch.setattr(stream.channel, "confirmations", Broken())
    await _post_and_expect(ingress, "during-1", "after-1", "after-2")
    assert publisher.publisher == "standard"
    assert _fallbacks(ingress) == 1
    assert (await ingress.client.get("/readyz")).status == 200
    metrics = await (await ingress.client.get("/metrics")).text()
    assert "event_gateway_publisher_fallbacks_total 1.0" in metrics


async def test_confirms_aiormq_no_longer_resolves_fail_the_start_up_check(
    make_ingress: IngressFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A (simulated) aiormq that resolves only the confirms its own ``basic_publish``
    registered: the start-up probe is never confirmed, the ingress starts on the standard
    path, says so in the metric, is ready and answers 204."""
    original: Callable[..., Any] = Channel._confirm_delivery

    def only_its_own(self: Channel, delivery_tag: int, frame: Any) -> Any:
        if delivery_tag not in self.message_id_delivery_tag.values():
            return None  # a tag the fast path registered: ignored, never confirmed
        return original(self, delivery_tag, frame)

    monkeypatch.setattr(Channel, "_confirm_delivery", only_its_own)
    ingress = await make_ingress(publish_timeout_s=1.0)
    assert _publisher(ingress).publisher == "standard"
    assert _fallbacks(ingress) == 1
    assert (await ingress.client.get("/readyz")).status == 200
    await _post_and_expect(ingress, "checked-1", "checked-2")
