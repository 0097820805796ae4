"""The broker ceiling for the ingress: confirmed publishing with aio-pika and no HTTP.

64 tasks (``--concurrency``) share one confirming channel and publish the benchmark body as
persistent messages, each awaiting its confirm, to a topic exchange with a ``#``-bound queue
of the same type the gateway uses. Reports msg/s, per-publish latency and its own peak RSS.
Creates ``<prefix>`` and ``<prefix>.bench`` and deletes them at the end.

Usage: ``python raw_publish.py --body FILE [--duration 10] [--loop uvloop]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

import aio_pika
import broker
import measure

ROUTING_KEY = "org.camaraproject.device-roaming-status-subscriptions.v0.roaming-status"


async def _publisher(
    exchange: aio_pika.abc.AbstractExchange,
    body: bytes,
    until: float,
    latencies: list[float],
) -> None:
    """Publish back to back until ``until``, recording each publish-to-confirm time."""
    while time.perf_counter() < until:
        message = aio_pika.Message(
            body=body,
            content_type="application/cloudevents+json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id="5f1c9e2a-7d43-4b8e-9a61-0c2f7e5d8b13",
            type=ROUTING_KEY,
            app_id="event-gateway-bench",
            headers={"ce-id": "5f1c9e2a-7d43-4b8e-9a61-0c2f7e5d8b13", "ce-type": ROUTING_KEY},
        )
        started = time.perf_counter()
        await exchange.publish(message, routing_key=ROUTING_KEY, mandatory=False)
        latencies.append(time.perf_counter() - started)


async def _phase(
    exchange: aio_pika.abc.AbstractExchange, body: bytes, concurrency: int, seconds: float
) -> tuple[list[float], float]:
    """Run ``concurrency`` publishers for ``seconds``; latencies and the elapsed time."""
    latencies: list[float] = []
    started = time.perf_counter()
    until = started + seconds
    await asyncio.gather(
        *(_publisher(exchange, body, until, latencies) for _ in range(concurrency))
    )
    return latencies, time.perf_counter() - started


async def run(args: argparse.Namespace, body: bytes) -> dict[str, Any]:
    """Warm up, measure, check the queue holds every confirmed message, clean up."""
    prefix = args.prefix or broker.unique_prefix("raw-publish")
    sink = f"{prefix}.bench"
    await broker.declare_sink(args.amqp_url, prefix, sink, args.queue_type, declare_exchange=True)
    try:
        connection = await aio_pika.connect_robust(args.amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(prefix)
            warm, _ = await _phase(exchange, body, args.concurrency, args.warmup)
            latencies, elapsed = await _phase(exchange, body, args.concurrency, args.duration)
        stored = await broker.message_count(args.amqp_url, sink)
    finally:
        await broker.delete(args.amqp_url, exchanges=[prefix], queues=[sink])
    latencies.sort()
    return {
        "published": len(latencies),
        "warmup_published": len(warm),
        "stored": stored,
        "seconds": elapsed,
        "rate": len(latencies) / elapsed,
        "p50_ms": measure.percentile(latencies, 50) * 1000,
        "p99_ms": measure.percentile(latencies, 99) * 1000,
        "rss_kib": measure.vmhwm_kib(),
        "loop": args.loop,
        "queue_type": args.queue_type,
        "concurrency": args.concurrency,
    }


def main() -> None:
    """Parse arguments, run on the chosen loop, print the result line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--amqp-url", default=broker.DEFAULT_URL)
    parser.add_argument("--body", required=True, help="file holding the message body")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--queue-type", choices=("quorum", "classic"), default="quorum")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--prefix", help="exchange name (default: a fresh bench-* name)")
    args = parser.parse_args()
    measure.emit(measure.run_on(args.loop, run(args, Path(args.body).read_bytes())))


if __name__ == "__main__":
    main()
