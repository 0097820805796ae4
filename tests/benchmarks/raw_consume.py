"""The broker ceiling for workers: consuming and acking with aio-pika, no handler work.

Pre-fills a durable queue (same type as the gateway's) with ``--messages`` persistent copies
of the benchmark body using confirmed publishes, then consumes them with prefetch 64
(``--prefetch``), acking each, and reports msg/s and its own peak RSS. Creates
``<prefix>.bench`` and deletes it at the end. With ``--cloudevent`` the body is a CloudEvent
and each message carries the properties and ``ce-*`` headers the ingress gives it
(``gateway.amqp_message.to_message``), so the workers' ceiling reads the same messages.

Usage: ``python raw_consume.py --body FILE [--messages 20000] [--loop uvloop] [--cloudevent]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import broker
import measure
import orjson

from gateway.amqp_message import to_message


def _message(body: bytes, cloudevent: bool) -> aio_pika.Message:
    if cloudevent:
        return to_message(orjson.loads(body), datetime.now(UTC))
    return aio_pika.Message(
        body=body,
        content_type="application/cloudevents+json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


async def _fill(
    channel: aio_pika.abc.AbstractChannel,
    queue: str,
    body: bytes,
    count: int,
    concurrency: int,
    *,
    cloudevent: bool = False,
) -> float:
    """Publish ``count`` confirmed persistent messages to ``queue``; returns msg/s."""
    remaining = count

    async def publisher() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            message = _message(body, cloudevent)
            await channel.default_exchange.publish(message, routing_key=queue)

    started = time.perf_counter()
    await asyncio.gather(*(publisher() for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


async def _drain(queue: aio_pika.abc.AbstractQueue, count: int) -> tuple[float, float]:
    """Consume and ack ``count`` messages; returns the seconds and the CPU seconds it took."""
    done = asyncio.Event()
    acked = 0

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal acked
        await message.ack()
        acked += 1
        if acked >= count:
            done.set()

    started, cpu = time.perf_counter(), time.process_time()
    tag = await queue.consume(on_message)
    await done.wait()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await queue.cancel(tag)
    return elapsed, cpu


async def run(args: argparse.Namespace, body: bytes) -> dict[str, Any]:
    """Fill, drain, clean up."""
    name = f"{args.prefix or broker.unique_prefix('raw-consume')}.bench"
    connection = await aio_pika.connect_robust(args.amqp_url)
    try:
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            queue = await channel.declare_queue(
                name, durable=True, arguments=broker.queue_arguments(args.queue_type)
            )
            fill_rate = await _fill(
                channel, name, body, args.messages, args.prefetch, cloudevent=args.cloudevent
            )
            await channel.set_qos(prefetch_count=args.prefetch)
            elapsed, cpu = await _drain(queue, args.messages)
            left = await broker.message_count(args.amqp_url, name)
    finally:
        await broker.delete(args.amqp_url, exchanges=[], queues=[name])
    return {
        "consumed": args.messages,
        "seconds": elapsed,
        "rate": args.messages / elapsed,
        "fill_rate": fill_rate,
        "cpu_share": cpu / elapsed,
        "left_in_queue": left,
        "rss_kib": measure.vmhwm_kib(),
        "loop": args.loop,
        "queue_type": args.queue_type,
        "prefetch": args.prefetch,
        "body_bytes": len(body),
        "cloudevent": args.cloudevent,
    }


def main() -> None:
    """Parse arguments, run on the chosen loop, print the result line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--amqp-url", default=broker.DEFAULT_URL)
    parser.add_argument("--body", required=True, help="file holding the message body")
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--prefetch", type=int, default=64)
    parser.add_argument("--queue-type", choices=("quorum", "classic"), default="quorum")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--prefix", help="queue name prefix (default: a fresh bench-* name)")
    parser.add_argument(
        "--cloudevent",
        action="store_true",
        help="publish the body as the ingress does (properties and ce-* headers)",
    )
    args = parser.parse_args()
    measure.emit(measure.run_on(args.loop, run(args, Path(args.body).read_bytes())))


if __name__ == "__main__":
    main()
