"""µs of CPU per accepted callback in the ingress's pure parts, stage by stage, with no HTTP
server and no broker: a repeatable micro-benchmark for issue 13's "the rest of the cost".

The app's own ``CallbackHandlers`` is built with the benchmark's settings (one ``camara``
source, a bearer token: ``run.py``'s ``gateway_config``) and fed ``payload.py``'s body with
wrk's headers (``post.lua``). Stages, each timed in a loop of its own:

- ``adapter``: the request's ``Context`` and ``camara.normalize`` (JSON parse included);
- ``auth``: the source's credential check, rate limit and type check (``SourceAccess``);
- ``limits``: the in-flight charge, its two resizes (``Content-Length``, then the parsed
  cost of the body) and its release;
- ``logging``: ``log_events`` through the JSON chain ``configure_logging`` installs, into a
  buffer;
- ``frame encoding``: ``to_outgoing`` and ``PublishEncoder.encode``;
- ``metrics``: ``IngressMetrics.observe`` and the confirmed count;
- ``publish + confirm``: ``Publisher.publish_events`` on a real ``ConfirmStream`` whose socket
  is a fake that acknowledges every write with one ``multiple`` ``basic.ack``, read by the
  real ``AckReader``, the channel's futures (the stream's closing sentinel) made by aiormq's
  own ``FutureStore`` as the real channel makes them, the confirms plain futures as the
  stream makes them (``--concurrency`` requests in flight, on the event loop ``serve``
  uses): the asyncio work of a publish and its confirm, frame encoding included;
- ``handler``: the whole ``POST`` handler (``CallbackHandlers.post_to``) with a publisher that
  only encodes the frames: every stage above but the publish, plus the glue between them.

Usage: ``python tests/benchmarks/hot_path.py [--rounds 5] [--profile STAGE]``. Each stage
prints the best of its rounds in µs of this thread's CPU time per request (so another load
on the machine slows it less than wall time would; caches still notice it).
``--profile`` runs one stage under cProfile and prints its top functions (``publish`` for
the publish stage). The script imports the ``gateway`` package of the tree it sits in, so a
copy of it in an older tree measures that tree: interleave the two for a before/after.

Read the stages as lower bounds: alone in a tight loop each finds its code and data in the
CPU's caches, and on the 2-core development machine they add up to about half of
``handler``, where the same work runs one stage after the other (each statement of the
handler, timed in place, costs 1.5-3x its stage alone). ``handler`` is the number to compare
with the py-spy stage table.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import hashlib
import io
import pstats
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import payload
from aiormq.base import FutureStore
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

from gateway import logs
from gateway.ack_reader import AckReader
from gateway.adapters import ADAPTERS, Context
from gateway.amqp_message import APP_ID, PERSISTENT, to_outgoing
from gateway.amqp_wire import PublishEncoder
from gateway.callbacks import CallbackHandlers
from gateway.cloudevent import CloudEvent, rfc3339
from gateway.confirm_stream import ConfirmStream
from gateway.inflight import parsed_cost
from gateway.metrics import IngressMetrics
from gateway.publisher import Publisher
from gateway.settings import AmqpSettings, HttpSettings, Settings, Source, TokenDigest

T = TypeVar("T")
TOKEN = "bench-token-0123456789abcdefghijklmnopqrstuv"
EXCHANGE = "bench"
BODY: bytes = payload.body()
HEADERS = CIMultiDictProxy(
    CIMultiDict(
        [
            ("Host", "127.0.0.1:8080"),
            ("Content-Length", str(len(BODY))),
            ("Content-Type", "application/cloudevents+json"),
            ("Authorization", f"Bearer {TOKEN}"),
        ]
    )
)
NO_QUERY: MultiDictProxy[str] = MultiDictProxy(MultiDict())


def bench_settings() -> Settings:
    """``run.py``'s gateway config: defaults but one bearer-token ``camara`` source."""
    source = Source(
        name="camara",
        adapter="camara",
        tokens=(TokenDigest(hashlib.sha256(TOKEN.encode()).digest()),),
    )
    return Settings(http=HttpSettings(), amqp=AmqpSettings(exchange=EXCHANGE), sources=(source,))


class BenchRequest:
    """A ``CallbackRequest`` of wrk's POST, its body already in memory (as the fast path's)."""

    headers = HEADERS
    remote = "127.0.0.1"
    query = NO_QUERY
    path = "/callbacks/camara"
    content_length = len(BODY)

    async def read(self) -> bytes:
        return BODY


class EncodingPublisher:
    """A publisher that encodes every event's frames (as the fast path does) and stores none."""

    ready = True
    frame_max = 131072

    def __init__(self) -> None:
        self._encoder = PublishEncoder(1, 131064, delivery_mode=PERSISTENT, app_id=APP_ID)

    async def publish_events(self, events: list[CloudEvent], received: datetime) -> None:
        timestamp = int(received.timestamp())
        for event in events:
            self._encoder.encode(to_outgoing(EXCHANGE, event), timestamp)

    async def publish_rejected(self, record: bytes, source: str, received: datetime) -> None:
        raise AssertionError("the benchmark's request is never rejected")


def run_sync(awaitable: Awaitable[T]) -> T:
    """Step an awaitable that never waits, without an event loop."""
    try:
        awaitable.__await__().send(None)
    except StopIteration as done:
        return cast(T, done.value)
    raise AssertionError("it waited")


class Stages:
    """One callable per stage, each doing one request's work of that stage."""

    def __init__(self) -> None:
        settings = bench_settings()
        self.source = settings.sources[0]
        self.handlers = CallbackHandlers(
            settings, EncodingPublisher(), IngressMetrics(lambda: True)
        )
        self.post = self.handlers.post_to(self.source)
        self.access = self.handlers.access[self.source.name]
        self.normalize = ADAPTERS[self.source.adapter]
        self.received_at = datetime.now(UTC)
        self.events = self.adapter()
        self.encoder = PublishEncoder(1, 131064, delivery_mode=PERSISTENT, app_id=APP_ID)
        self.metrics = IngressMetrics(lambda: True)

    def adapter(self) -> list[CloudEvent]:
        received_at = datetime.now(UTC)
        ctx = Context(
            self.source.name,
            rfc3339(received_at),
            self.source.max_future_skew_s,
            1000,
            131072,
            received_at,
        )
        return self.normalize(HEADERS, BODY, ctx)

    def auth(self) -> None:
        access = self.access
        result = run_sync(access.authenticate(HEADERS, None, None, self.received_at))
        assert result.outcome.value == "accepted"
        assert not access.rate_wait()
        assert access.forbidden_type(self.events) is None

    def limits(self) -> None:
        charge = self.handlers.inflight.charge(self.source.name)
        charge.resize(len(BODY))
        charge.resize(max(charge.amount, parsed_cost(BODY)))
        charge.release()

    def logging(self) -> None:
        logs.log_events("event accepted", self.source.name, self.events)

    def frames(self) -> None:
        for event in self.events:
            self.encoder.encode(to_outgoing(EXCHANGE, event), 1_764_547_200)

    def observe(self) -> None:
        self.metrics.observe(self.source.name, 204, 0.0004)
        self.metrics.confirmed.inc(1)

    def handler(self) -> None:
        response = run_sync(self.post(BenchRequest()))
        assert response.status == 204, response


def json_logging_into_buffer() -> tuple[io.TextIOWrapper, io.BytesIO]:
    """``configure_logging("json")`` writing to a buffer instead of stdout: the text wrapper
    (keep it: collecting it closes the buffer) and the buffer."""
    buffer = io.BytesIO()
    stdout = sys.stdout
    sys.stdout = wrapper = io.TextIOWrapper(buffer)
    try:
        logs.configure_logging("json")
    finally:
        sys.stdout = stdout
        sys.excepthook = sys.__excepthook__  # a failing stage shows its traceback
    return wrapper, buffer


def time_loop(work: Callable[[], object], count: int, rounds: int) -> float:
    """Best of ``rounds`` loops of ``count`` calls, in µs of CPU per call."""
    best = float("inf")
    for _ in range(rounds):
        started = time.thread_time()
        for _ in range(count):
            work()
        best = min(best, time.thread_time() - started)
    return best / count * 1e6


# --- publish + confirm: a real Publisher and ConfirmStream over a socket that acks ---------

_ACK = struct.Struct(">BHIHHQB")


class _AckingTransport:
    """The connection's transport: sends nothing, answers each write with one
    ``basic.ack`` (``multiple``) of the newest delivery tag, on the next loop turn."""

    def __init__(self, channel: _Channel) -> None:
        self.channel = channel
        self.feed: Callable[[bytes], None] = lambda data: None

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def writelines(self, frames: list[bytes]) -> None:
        ack = _ACK.pack(1, self.channel.number, 13, 60, 80, self.channel.delivery_tag, 1)
        asyncio.get_running_loop().call_soon(self.feed, ack + b"\xce")


class _Channel:
    """What ``ConfirmStream`` and ``AckReader`` use of an aiormq confirm channel."""

    number = 1
    max_content_size = 131064
    is_closed = False

    def __init__(self) -> None:
        self.delivery_tag = 0
        self.confirmations: dict[int, asyncio.Future[Any]] = {}
        # aiormq's own future bookkeeping: the channel's store, a child of the connection's
        # (each adds a done callback to every future, to drop it again, and fails them all
        # when the channel closes).
        self._futures = FutureStore(asyncio.get_running_loop()).get_child()

    def create_future(self) -> asyncio.Future[Any]:
        return self._futures.create_future()

    def _confirm_delivery(self, tag: int, frame: Any) -> None:  # aiormq's, for an ack
        confirmation = self.confirmations.pop(tag, None)
        if confirmation is not None and not confirmation.done():
            confirmation.set_result(frame)


class _Writer:
    def __init__(self, transport: _AckingTransport) -> None:
        self.transport = transport


class _Connection:
    """A connection that is up and not blocked (``broker_connect.accepts_publishes``): the
    two aiormq events it reads, set (without them it measured its ``ready()`` fallback)."""

    def __init__(self) -> None:
        self.transport = self
        self.connection = self
        self.connected = asyncio.Event()
        self.connected.set()
        unblocked = asyncio.Event()
        unblocked.set()
        self._Connection__connection_unblocked = unblocked  # aiormq's private name


class _Exchange:
    name = EXCHANGE


async def publish_loop(events: list[CloudEvent], count: int, concurrency: int) -> float:
    """µs per request of ``Publisher.publish_events`` with ``concurrency`` requests in flight."""
    channel = _Channel()
    transport = _AckingTransport(channel)
    writer: Any = _Writer(transport)
    reader = AckReader(lambda data: None)
    transport.feed = reader.feed_data
    reader.register(channel)
    publisher = Publisher(AmqpSettings(exchange=EXCHANGE))
    stream = ConfirmStream(
        channel,  # type: ignore[arg-type]
        writer,
        timeout_s=publisher._timeout_s,
        delivery_mode=PERSISTENT,
        app_id=APP_ID,
    )
    publisher._stream = stream
    publisher._connection = _Connection()  # type: ignore[assignment]
    publisher._events = _Exchange()  # type: ignore[assignment]
    publisher._ready.set()
    received = datetime.now(UTC)

    async def sender(requests: int) -> None:
        for _ in range(requests):
            await publisher.publish_events(events, received)

    started = time.thread_time()
    await asyncio.gather(*(sender(count // concurrency) for _ in range(concurrency)))
    return (time.thread_time() - started) / (count // concurrency * concurrency) * 1e6


def time_publish(events: list[CloudEvent], count: int, rounds: int, concurrency: int) -> float:
    import uvloop

    return min(uvloop.run(publish_loop(events, count, concurrency)) for _ in range(rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=20_000, help="requests per round")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--profile", help="run this stage under cProfile instead")
    args = parser.parse_args()

    _log_output, log_buffer = json_logging_into_buffer()
    stages = Stages()
    loops: dict[str, Callable[[], object]] = {
        "adapter": stages.adapter,
        "auth": stages.auth,
        "limits": stages.limits,
        "logging": stages.logging,
        "frame encoding": stages.frames,
        "metrics": stages.observe,
        "handler": stages.handler,
    }
    gc.freeze()  # as gateway.loop.tune_gc does for serve
    gc.set_threshold(10_000, 10, 10)
    if args.profile:
        profile = cProfile.Profile()
        if args.profile == "publish":
            profile.enable()
            time_publish(stages.events, args.count, 1, args.concurrency)
        else:
            work = loops[args.profile]
            profile.enable()
            for _ in range(args.count):
                work()
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        return
    print(f"{'stage':<20} µs/request (best of {args.rounds} x {args.count})")
    for name, work in loops.items():
        print(f"{name:<20} {time_loop(work, args.count, args.rounds):8.2f}")
        log_buffer.seek(0)
        log_buffer.truncate()
    publish = time_publish(stages.events, args.count, args.rounds, args.concurrency)
    print(f"{'publish + confirm':<20} {publish:8.2f}   ({args.concurrency} in flight)")


if __name__ == "__main__":
    main()
