"""``event-gateway unrouted list|replay``: events no queue was bound for, listed as the events,
and published again once a binding exists, on the real broker."""

from __future__ import annotations

import json
from pathlib import Path

from consumers.unrouted import REPLAYED_HEADER
from gateway.topology import declare_ingress
from tests.queue_tools_support import json_lines, message_ids
from tests.worker_support import (
    Broker,
    as_received,
    drain_queue,
    make_settings,
    publish_events,
    queue_depth,
    run_cli,
    write_config,
)

TYPES = ("com.example.order.created", "com.example.order.paid", "notify.email.delivery-status")


def event(n: int, event_type: str) -> dict[str, str]:
    return as_received(
        {"specversion": "1.0", "id": f"u-{n}", "source": "/shop", "type": event_type}
    )


async def unrouted_events(env: Broker, tmp_path: Path) -> str:
    """Three events published with nothing bound: all wait in .unrouted; returns the config."""
    settings = make_settings(env.prefix)
    channel = await env.channel()
    await publish_events(channel, settings, [event(n, t) for n, t in enumerate(TYPES)])
    assert await queue_depth(channel, f"{env.prefix}.unrouted") == 3
    return str(write_config(tmp_path, settings))


async def test_list_prints_the_events(env: Broker, tmp_path: Path) -> None:
    """A line is the event itself, oldest first; --limit; nothing is taken."""
    config = await unrouted_events(env, tmp_path)
    listed = run_cli("unrouted", "list", "--config", config)
    assert listed.returncode == 0, listed.stderr
    lines = json_lines(listed)
    assert [line["id"] for line in lines] == ["u-0", "u-1", "u-2"]
    assert [line["type"] for line in lines] == list(TYPES)
    assert lines[0]["gatewaysource"] == "test"
    limited = run_cli("unrouted", "list", "--limit", "1", "--config", config)
    assert [line["id"] for line in json_lines(limited)] == ["u-0"]
    assert await message_ids(f"{env.prefix}.unrouted") == ["u-0", "u-1", "u-2"]


async def test_replay_routes_what_is_now_bound_and_keeps_the_rest(
    env: Broker, tmp_path: Path
) -> None:
    """After a binding for one type, replay delivers that event to its queue; the two still
    unroutable come back to .unrouted and count as failed (exit 1)."""
    config = await unrouted_events(env, tmp_path)
    channel = await env.channel()
    exchange = await declare_ingress(channel, make_settings(env.prefix).amqp)
    orders = f"{env.prefix}.orders"
    env.extra_queues.add(orders)
    queue = await channel.declare_queue(orders, durable=True)
    await queue.bind(exchange, routing_key="com.example.order.paid")
    dry = run_cli("unrouted", "replay", "--dry-run", "--config", config)
    assert json_lines(dry)[-1] == {"replayed": 3, "failed": 0, "dry_run": True}
    assert await queue_depth(channel, orders) == 0
    replayed = run_cli("unrouted", "replay", "--config", config)
    assert replayed.returncode == 1, replayed.stderr
    assert json_lines(replayed) == [{"replayed": 1, "failed": 2}]
    delivered = await drain_queue(channel, orders)
    assert [m.message_id for m in delivered] == ["u-1"]
    assert json.loads(delivered[0].body)["type"] == "com.example.order.paid"
    assert delivered[0].routing_key == "com.example.order.paid"
    assert REPLAYED_HEADER in (delivered[0].headers or {})
    assert await message_ids(f"{env.prefix}.unrouted") == ["u-0", "u-2"]
