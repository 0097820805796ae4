"""``event-gateway rejected list|replay``: kept requests listed as their records, and run
again through today's config, adapters and source types, on the real broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pamqp import commands

from gateway.cloudevent import rfc3339
from gateway.publisher import REJECTED_TYPE
from gateway.topology import declare_ingress
from tests.queue_tools_support import config_with_sources, fill, json_lines, message_ids
from tests.worker_support import Broker, drain_queue, fixture, make_settings, run_cli

DIGEST = "sha256:" + "ab" * 32
SOURCES = f"""
[[sources]]
name = "partner"
adapter = "cloudevents"
tokens = ["{DIGEST}"]
types = ["com.example.#"]

[[sources]]
name = "camara"
adapter = "camara"
tokens = ["{DIGEST}"]
"""
RECEIVED = rfc3339(datetime(2026, 11, 30, 12, 0, tzinfo=UTC))
ORDER = {"specversion": "1.0", "id": "o-1", "source": "/shop", "type": "com.example.order.created"}


def record(source: str, status: int, reason: str, body: str, content_type: str) -> bytes:
    """A kept request as the ingress writes it (§2 shape)."""
    return json.dumps(
        {
            "source": source,
            "status": status,
            "reason": reason,
            "received": RECEIVED,
            "headers": {"Content-Type": content_type, "User-Agent": "test"},
            "body": body,
        }
    ).encode()


def kept(message_id: str, body: bytes) -> tuple[bytes, commands.Basic.Properties]:
    properties = commands.Basic.Properties(
        content_type="application/json",
        delivery_mode=2,
        message_id=message_id,
        message_type=REJECTED_TYPE,
    )
    return body, properties


STRUCTURED = "application/cloudevents+json"
KEPT = [
    # refused then (another types list), accepted today
    kept("r-order", record("partner", 403, "type", json.dumps(ORDER), STRUCTURED)),
    # still not JSON
    kept("r-broken", record("partner", 400, "not JSON", "{oops", STRUCTURED)),
    # a source that is no longer configured
    kept("r-gone", record("gone", 400, "whatever", json.dumps(ORDER), "application/json")),
    # not a record at all
    kept("r-junk", b"\xffnot a record"),
    # a CAMARA callback that passes today
    kept(
        "r-camara",
        record(
            "camara",
            400,
            "was refused",
            json.dumps(fixture("camara-roaming-on")),
            STRUCTURED,
        ),
    ),
]


async def kept_requests(env: Broker, tmp_path: Path) -> tuple[str, str, str]:
    """The ingress topology with KEPT on ``.rejected`` and a queue capturing every event;
    returns (config file, rejected queue, capture queue)."""
    settings = make_settings(env.prefix)
    channel = await env.channel()
    exchange = await declare_ingress(channel, settings.amqp)
    capture = f"{env.prefix}.capture"
    env.extra_queues.add(capture)
    queue = await channel.declare_queue(capture, durable=True)
    await queue.bind(exchange, routing_key="#")
    rejected = f"{env.prefix}.rejected"
    await fill("", KEPT, exchange=rejected)
    return config_with_sources(tmp_path, settings, SOURCES), rejected, capture


async def test_list_shows_each_record_with_its_message_id(env: Broker, tmp_path: Path) -> None:
    """A line is the kept record plus message_id, oldest first; a message that is no record
    is listed as malformed; --source and --limit select; nothing is taken."""
    config, rejected, _ = await kept_requests(env, tmp_path)
    listed = run_cli("rejected", "list", "--config", config)
    assert listed.returncode == 0, listed.stderr
    lines = json_lines(listed)
    assert [line["message_id"] for line in lines] == [m.message_id for _, m in KEPT]
    first: dict[str, Any] = json.loads(KEPT[0][0])
    assert lines[0] == {**first, "message_id": "r-order"}
    assert lines[3]["malformed"].startswith("the body is not JSON")
    assert "body_base64" in lines[3]
    partner = run_cli("rejected", "list", "--source", "partner", "--config", config)
    assert [line["message_id"] for line in json_lines(partner)] == ["r-order", "r-broken"]
    limited = run_cli("rejected", "list", "--source", "camara", "--limit", "1", "--config", config)
    assert [line["message_id"] for line in json_lines(limited)] == ["r-camara"]
    assert await message_ids(rejected) == [m.message_id for _, m in KEPT]


async def test_dry_run_says_what_today_makes_of_each(env: Broker, tmp_path: Path) -> None:
    """--dry-run: accepted ones name their events, the others their new status and reason;
    nothing moves; exit 1 because some would still fail."""
    config, rejected, capture = await kept_requests(env, tmp_path)
    dry = run_cli("rejected", "replay", "--dry-run", "--config", config)
    assert dry.returncode == 1, dry.stderr
    lines = {line.get("message_id"): line for line in json_lines(dry)}
    assert lines["r-order"]["outcome"] == "accepted"
    assert lines["r-order"]["events"] == [{"id": "o-1", "type": ORDER["type"]}]
    assert lines["r-broken"]["outcome"] == "rejected"
    assert lines["r-broken"]["status"] == 400
    assert lines["r-gone"]["status"] == 404
    assert lines["r-junk"]["outcome"] == "malformed"
    assert lines["r-camara"]["outcome"] == "accepted"
    assert json_lines(dry)[-1] == {"replayed": 2, "failed": 3, "dry_run": True}
    assert await message_ids(capture) == []
    assert len(await message_ids(rejected)) == len(KEPT)


async def test_replay_publishes_what_passes_and_keeps_the_rest(env: Broker, tmp_path: Path) -> None:
    """What today's config accepts is published as the ingress would (same id, original
    receive time) and leaves .rejected; what fails goes back with its new reason."""
    config, rejected, capture = await kept_requests(env, tmp_path)
    partner = run_cli("rejected", "replay", "--source", "partner", "--config", config)
    assert partner.returncode == 1, partner.stderr
    assert json_lines(partner) == [{"replayed": 1, "failed": 1}]
    everything = run_cli("rejected", "replay", "--config", config)
    assert everything.returncode == 1, everything.stderr
    assert json_lines(everything) == [{"replayed": 1, "failed": 3}]
    published = await drain_queue(await env.channel(), capture)
    assert [m.message_id for m in published] == ["o-1", fixture("camara-roaming-on")["id"]]
    order = published[0]
    assert order.routing_key == ORDER["type"]
    assert order.type == ORDER["type"]
    body = json.loads(order.body)
    assert body["gatewaysource"] == "partner"
    assert body["gatewayreceived"] == RECEIVED
    assert (order.headers or {})["ce-id"] == "o-1"
    left = run_cli("rejected", "list", "--config", config)
    lines = {line["message_id"]: line for line in json_lines(left)}
    assert set(lines) == {"r-broken", "r-gone", "r-junk"}
    assert lines["r-gone"]["status"] == 404
    assert lines["r-gone"]["reason"] == "no callback source of that name is configured"
    assert lines["r-broken"]["status"] == 400
    assert lines["r-broken"]["reason"] != "not JSON"  # today's adapter's words
    assert lines["r-broken"]["received"] == RECEIVED
    assert len(await message_ids(rejected)) == 3


def test_a_replayed_request_keeps_its_trace_context() -> None:
    """``rejected replay`` re-runs a kept request with its own ``traceparent``, as the ingress
    would have: the event carries it."""
    from gateway.rejected_replay import Accepted, plan_record
    from gateway.settings import Settings, Source

    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    event = {
        "specversion": "1.0",
        "id": "t-1",
        "source": "/x",
        "type": "com.example.thing",
        "time": "2026-11-30T10:00:00Z",
    }
    record = {
        "source": "partner",
        "status": 400,
        "reason": "was refused",
        "received": "2026-11-30T10:00:01Z",
        "headers": {"Content-Type": "application/cloudevents+json", "traceparent": traceparent},
        "body": json.dumps(event),
    }
    settings = Settings(sources=(Source("partner", "cloudevents"),))
    planned = plan_record(record, settings)
    assert isinstance(planned, Accepted)
    assert planned.events[0]["traceparent"] == traceparent
