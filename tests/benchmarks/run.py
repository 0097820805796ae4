"""``make bench``: how fast event-gateway ingests, next to a tutorial reference and ceilings.

Each target runs alone, as its own process, against the shared RabbitMQ:

1. gateway     — ``event-gateway serve`` with a temporary config (quorum queues);
2. reference   — ``reference_fastapi.py``, the same job written the way tutorials do;
3. bare        — ``bare_aiohttp.py``, read the body and answer 204: the HTTP ceiling;
4. raw-publish — ``raw_publish.py``, confirmed aio-pika publishing, no HTTP: the broker ceiling;
5. raw-consume — ``raw_consume.py``, consume + ack with prefetch 64: the worker ceiling, fed
   the same messages the workers get (the ingress's properties, headers and body size);
6. worker-sqlite, worker-postgres — ``event-gateway consume roaming`` draining a pre-filled
   queue of roaming events into a SQLite file / a fresh PostgreSQL schema (``worker_bench``).

HTTP targets get ``wrk -t2 -c64 --latency -s post.lua`` (a warm-up, then the measured run).
Every exchange and queue is named ``bench-<random>-…`` and deleted afterwards, every
PostgreSQL schema ``bench_<random>`` dropped. The report is printed and written to
``bench-results/latest.md`` (and ``latest.json``).

Usage: ``.venv/bin/python tests/benchmarks/run.py [--duration 10] [--rounds 3]
[--only gateway,bare | --only ingress | --only worker] [--profile]`` (``--help`` lists all).
``--only worker`` runs the workers section alone (raw consume and both workers).
``--rounds N`` interleaves N rounds and reports each target's median round: use it on a busy
machine. ``--profile`` samples the gateway and the workers with py-spy while they are
measured (see ``profile.sh``). Exit status 1 when a target could not be measured or a message
was lost (with ``--strict`` also when a target is missed).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bench_jwt
import broker
import loadgen
import measure
import payload
import peers
import profiling
import report
import stages
import worker_bench
from report import Row
from servers import Server, clean_env, free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CALLBACK_PATH = "/callbacks/camara"
TARGETS = (
    "gateway",
    "gateway-aiohttp",
    "gateway-standard",
    "gateway-jwt",
    "gateway-workers-2",
    "node-peer",
    "go-peer",
    "reference",
    "bare",
    "raw-publish",
    "raw-consume",
    "worker-sqlite",
    "worker-postgres",
    "dlq-replay",
)
# --only also takes a section's name for all of its targets.
SECTION_TARGETS = {
    "ingress": (
        "gateway",
        "gateway-aiohttp",
        "gateway-standard",
        "gateway-jwt",
        "gateway-workers-2",
        "node-peer",
        "go-peer",
        "reference",
        "bare",
        "raw-publish",
    ),
    "peers": ("gateway", "gateway-aiohttp", "gateway-workers-2", "node-peer", "go-peer"),
    "worker": ("raw-consume", "worker-sqlite", "worker-postgres"),
    "workers": ("raw-consume", "worker-sqlite", "worker-postgres"),
    "tools": ("dlq-replay",),
}


@dataclass
class Context:
    """Settings and shared inputs of one benchmark run."""

    out: Path
    body_file: Path
    token: str
    amqp_url: str
    duration: float
    warmup: float
    connections: int
    threads: int
    queue_type: str
    raw_loop: str
    consume_messages: int
    profile: bool
    only: frozenset[str]
    event_body_file: Path
    postgres_url: str = worker_bench.DEFAULT_POSTGRES_URL
    devices: int = 1000
    rounds: int = 1
    appendix: list[str] = dataclasses.field(default_factory=list)
    jwt: bench_jwt.Credentials = dataclasses.field(default_factory=bench_jwt.credentials)

    @property
    def logs(self) -> Path:
        return self.out / "logs"


def say(text: str) -> None:
    """Progress on stderr, so stdout stays the report."""
    print(f"bench: {text}", file=sys.stderr, flush=True)


def _python() -> str:
    return sys.executable


# --- HTTP targets -------------------------------------------------------------------------


def _wrk(ctx: Context, url: str, seconds: float, token: str | None = None) -> loadgen.WrkResult:
    return loadgen.run_wrk(
        url,
        body_file=ctx.body_file,
        token=ctx.token if token is None else token,
        seconds=seconds,
        connections=ctx.connections,
        threads=ctx.threads,
    )


def _load(
    ctx: Context,
    server: Server,
    row: Row,
    *,
    profile_as: str | None = None,
    path: str = CALLBACK_PATH,
    token: str | None = None,
) -> None:
    """Warm up, then measure with wrk; fill ``row`` (rate counts 2xx answers only)."""
    url = server.url(path)
    ok_before = 0
    if ctx.warmup > 0:
        say(f"{row.name}: warm-up {ctx.warmup:g}s")
        warm = _wrk(ctx, url, ctx.warmup, token)
        ok_before = warm.ok2xx
        if warm.non2xx:
            row.notes.append(f"warm-up non-2xx: {warm.non2xx} {warm.statuses}")
    recording = None
    if profile_as:
        recording = profiling.record(server.pid, ctx.duration, ctx.out, profile_as)
    say(f"{row.name}: measuring {ctx.duration:g}s at {ctx.connections} connections")
    cpu_before = _tree_cpu(server.pid)
    result = _wrk(ctx, url, ctx.duration, token)
    cpu_used = _tree_cpu(server.pid) - cpu_before
    row.rate = result.ok2xx / result.seconds
    if result.ok2xx:
        row.cpu_us = cpu_used / result.ok2xx * 1e6
    row.p50_ms, row.p99_ms = result.p50_ms, result.p99_ms
    row.non2xx, row.ok2xx = result.non2xx, ok_before + result.ok2xx
    if result.non2xx:
        row.notes.append(f"non-2xx answers: {result.non2xx} {result.statuses}")
    if result.socket_errors:
        row.notes.append(f"wrk socket errors: {result.errors}")
    if recording is not None:
        recording.wait(ctx.duration + 30)
        summary = profiling.top_frames(recording.folded)
        row.notes.append(
            f"profiled with py-spy while measured (numbers perturbed): {recording.svg}, "
            f"{recording.folded}"
        )
        ctx.appendix += [f"## Profile: {row.name} (py-spy)", "", "```", summary, "```", ""]
        ctx.appendix += [
            f"## Stages: {row.name}, CPU µs per request (py-spy samples x measured CPU)",
            "",
            stages.table(recording.folded, row.cpu_us),
            "",
        ]


def _tree_cpu(pid: int) -> float:
    """CPU seconds used so far by a server and its children (``serve --workers N``)."""
    return measure.cpu_seconds(pid) + sum(
        measure.cpu_seconds(child) for child in measure.descendants(pid)
    )


def _check_stored(ctx: Context, row: Row, queue: str) -> None:
    row.stored = asyncio.run(broker.message_count(ctx.amqp_url, queue))
    row.notes.append(f"{row.stored:,} messages stored for {row.ok2xx:,} 2xx (incl. warm-up)")


def _cleanup(ctx: Context, row: Row, *, exchanges: list[str], queues: list[str]) -> None:
    failed = asyncio.run(broker.delete(ctx.amqp_url, exchanges=exchanges, queues=queues))
    if failed:
        row.notes.append(f"clean-up failed: {'; '.join(failed)}")


def bench_gateway(ctx: Context) -> Row:
    """``event-gateway serve`` with one camara source, publishing to a fresh exchange."""
    row = Row("gateway", "event-gateway serve: auth, normalize, confirmed publish")
    return _bench_serve(ctx, row, [])


def bench_gateway_aiohttp(ctx: Context) -> Row:
    """``[http] fast_path = false``: every request through aiohttp (the path before issue 13's
    lean protocol), for the same-run comparison."""
    row = Row("gateway-aiohttp", "serve, http.fast_path = false: aiohttp parses and answers")
    return _bench_serve(ctx, row, [], fast_path=False)


def bench_gateway_standard(ctx: Context) -> Row:
    """``event-gateway serve`` with ``[amqp] publisher = "standard"`` (plain aio-pika)."""
    row = Row("gateway-standard", "serve, publisher = standard: aio-pika publish + confirm")
    return _bench_serve(ctx, row, [], publisher="standard")


def bench_gateway_jwt(ctx: Context) -> Row:
    """``event-gateway serve`` with an ``auth = "jwt"`` source (ES256 tokens, JWKS file)."""
    row = Row("gateway-jwt", "serve, auth = jwt: ES256 token, verified once then remembered")
    return _bench_serve(ctx, row, [], path="/callbacks/camara-jwt", token=ctx.jwt.token)


def bench_gateway_workers(ctx: Context) -> Row:
    """``event-gateway serve --workers 2``: two processes on one port (SO_REUSEPORT)."""
    row = Row("gateway-workers-2", "serve --workers 2: two ingress processes, one port")
    return _bench_serve(ctx, row, ["--workers", "2"])


def _bench_serve(
    ctx: Context,
    row: Row,
    extra: list[str],
    *,
    path: str = CALLBACK_PATH,
    token: str | None = None,
    publisher: str = "fast",
    fast_path: bool = True,
) -> Row:
    cli = Path(_python()).with_name("event-gateway")
    probe = subprocess.run(
        [str(cli), "serve", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    if probe.returncode != 0:
        last = (probe.stderr or probe.stdout).strip().splitlines()[-1:] or ["no output"]
        row.error = f"`event-gateway serve --help` failed ({probe.returncode}): {last[0]}"
        return row
    prefix = broker.unique_prefix("gateway")
    port = free_port()
    row.notes.append(f"exchange {prefix}, queue_type {ctx.queue_type}, port {port}")
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        config = Path(tmp) / "gateway.toml"
        config.write_text(
            gateway_config(ctx, prefix, port, Path(tmp), publisher, fast_path), encoding="utf-8"
        )
        (Path(tmp) / "jwks.json").write_text(ctx.jwt.jwks, encoding="utf-8")
        argv = [str(cli), "serve", "--config", str(config), *extra]
        try:
            log = ctx.logs / f"{row.name}.log"
            with Server(row.name, argv, port, log, clean_env()) as server:
                server.wait_ready()
                asyncio.run(
                    broker.declare_sink(
                        ctx.amqp_url,
                        prefix,
                        f"{prefix}.bench",
                        ctx.queue_type,
                        declare_exchange=False,
                    )
                )
                profile_as = "gateway" if ctx.profile and not extra and token is None else None
                _load(ctx, server, row, profile_as=profile_as, path=path, token=token)
                _check_stored(ctx, row, f"{prefix}.bench")
            row.rss_kib = server.rss_kib
        finally:
            _cleanup(
                ctx,
                row,
                exchanges=[prefix, f"{prefix}.unrouted", f"{prefix}.rejected"],
                queues=[f"{prefix}.bench", f"{prefix}.unrouted", f"{prefix}.rejected"],
            )
    return row


def gateway_config(
    ctx: Context,
    prefix: str,
    port: int,
    tmp: Path,
    publisher: str = "fast",
    fast_path: bool = True,
) -> str:
    """The temporary TOML (contract §1) for one gateway run."""
    return "\n".join(
        [
            "[http]",
            'host = "127.0.0.1"',
            f"port = {port}",
            f"fast_path = {'true' if fast_path else 'false'}",
            "",
            "[amqp]",
            f"url = {json.dumps(ctx.amqp_url)}",
            f"exchange = {json.dumps(prefix)}",
            f"queue_type = {json.dumps(ctx.queue_type)}",
            f"publisher = {json.dumps(publisher)}",
            "",
            "[state]",
            f"url = {json.dumps('sqlite:///' + str(tmp / 'state.db'))}",
            "",
            "[[sources]]",
            'name = "camara"',
            'adapter = "camara"',
            f"tokens = [{json.dumps(payload.digest(ctx.token))}]",
            "",
            *bench_jwt.source_config(str(tmp / "jwks.json")),
        ]
    )


def bench_reference(ctx: Context) -> Row:
    """The tutorial-shaped FastAPI service, publishing to a fresh exchange."""
    row = Row("reference", "FastAPI + pydantic + aio-pika, as tutorials write it")
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    row.notes.append(f"uvicorn defaults: loop auto (uvloop installed), http auto → {http}")
    if http == "h11":
        row.notes.append("httptools is not installed (uvicorn[standard] would add it)")
    return _bench_server(ctx, row, [_python(), str(HERE / "reference_fastapi.py")])


def _bench_peer(ctx: Context, row: Row, argv_for: Callable[[], list[str]]) -> Row:
    """One of the Node.js/Go peers (``peers.py``), publishing to a fresh exchange."""
    try:
        command = argv_for()
    except peers.PeerUnavailable as exc:
        row.error = f"skipped: {exc}"
        return row
    return _bench_server(ctx, row, command)


def _bench_server(ctx: Context, row: Row, command: list[str]) -> Row:
    """A server that is not the gateway (the reference, a peer), started as ``command`` with
    its port, broker, a fresh exchange and the token digest, then loaded like the gateway."""
    prefix = broker.unique_prefix(row.name)
    port = free_port()
    argv = [
        *command,
        "--port",
        str(port),
        "--amqp-url",
        ctx.amqp_url,
        "--exchange",
        prefix,
        "--token-digest",
        payload.digest(ctx.token),
    ]
    try:
        with Server(row.name, argv, port, ctx.logs / f"{row.name}.log", clean_env()) as server:
            server.wait_ready()
            asyncio.run(
                broker.declare_sink(
                    ctx.amqp_url, prefix, f"{prefix}.bench", ctx.queue_type, declare_exchange=False
                )
            )
            _load(ctx, server, row)
            _check_stored(ctx, row, f"{prefix}.bench")
        row.rss_kib = server.rss_kib
    finally:
        _cleanup(ctx, row, exchanges=[prefix], queues=[f"{prefix}.bench"])
    return row


def bench_node_peer(ctx: Context) -> Row:
    """Fastify 5 + amqplib ConfirmChannel, one process: the Node.js gateway a team writes."""
    row = Row("node-peer", "Fastify + amqplib ConfirmChannel: token, raw body, 204 after ack")
    return _bench_peer(ctx, row, peers.node_argv)


def bench_go_peer(ctx: Context) -> Row:
    """net/http + amqp091-go with deferred confirms: the Go gateway a team writes."""
    row = Row("go-peer", "net/http + amqp091-go deferred confirms: token, raw body, 204")
    return _bench_peer(ctx, row, lambda: peers.go_argv(ctx.out / "go-build"))


def bench_bare(ctx: Context) -> Row:
    """aiohttp on uvloop reading the body and answering 204: nothing else."""
    row = Row("bare", "aiohttp handler, read body, 204, no broker (HTTP ceiling)")
    port = free_port()
    argv = [_python(), str(HERE / "bare_aiohttp.py"), "--port", str(port)]
    with Server("bare", argv, port, ctx.logs / "bare.log", clean_env()) as server:
        server.wait_ready()
        _load(ctx, server, row)
    row.rss_kib = server.rss_kib
    return row


# --- raw AMQP targets ---------------------------------------------------------------------


def _script(
    ctx: Context, name: str, args: list[str], timeout_s: float, body: Path | None = None
) -> dict[str, Any]:
    """Run one of the raw scripts and return its result line."""
    argv = [
        _python(),
        str(HERE / name),
        "--amqp-url",
        ctx.amqp_url,
        "--body",
        str(body or ctx.body_file),
        "--queue-type",
        ctx.queue_type,
        "--loop",
        ctx.raw_loop,
        *args,
    ]
    log = ctx.logs / name.replace(".py", ".log")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    log.write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"{name} exited with {done.returncode}: {tail}")
    return measure.parse_result(done.stdout)


def bench_raw_publish(ctx: Context) -> Row:
    """Confirmed publishing from ``connections`` tasks on one channel, no HTTP."""
    row = Row("raw-publish", "aio-pika confirmed publish, no HTTP (broker ceiling)", "msg/s")
    say(f"raw publish: {ctx.warmup:g}s warm-up + {ctx.duration:g}s on {ctx.raw_loop}")
    result = _script(
        ctx,
        "raw_publish.py",
        [
            "--duration",
            str(ctx.duration),
            "--warmup",
            str(ctx.warmup),
            "--concurrency",
            str(ctx.connections),
        ],
        ctx.duration + ctx.warmup + 120,
    )
    row.rate = float(result["rate"])
    row.p50_ms = float(result["p50_ms"])
    row.p99_ms = float(result["p99_ms"])
    row.rss_kib = int(result["rss_kib"])
    row.notes.append(
        f"{ctx.connections} publishing tasks on one channel, event loop {result['loop']}; "
        f"per-publish latency; {result['stored']:,} stored of "
        f"{int(result['published']) + int(result['warmup_published']):,} confirmed"
    )
    return row


def bench_raw_consume(ctx: Context) -> Row:
    """Consume and ack a pre-filled queue with prefetch 64, no handler work."""
    row = Row("raw-consume", "aio-pika consume + ack, prefetch 64 (worker ceiling)", "msg/s")
    say(f"raw consume: fill and drain {ctx.consume_messages:,} messages on {ctx.raw_loop}")
    result = _script(
        ctx,
        "raw_consume.py",
        [
            "--messages",
            str(ctx.consume_messages),
            "--prefetch",
            "64",
            "--cloudevent",
        ],
        600,
        body=ctx.event_body_file,
    )
    row.rate = float(result["rate"])
    row.rss_kib = int(result["rss_kib"])
    row.notes.append(
        f"{ctx.consume_messages:,} messages of {result['body_bytes']} bytes with the ingress's "
        f"properties and ce-* headers, {ctx.queue_type} queue, event loop {result['loop']}, "
        f"{100 * float(result['cpu_share']):.0f}% of a core while consuming; "
        f"pre-fill ran at {float(result['fill_rate']):,.0f} msg/s; "
        f"{result['left_in_queue']} left in queue"
    )
    return row


def _bench_worker(ctx: Context, backend: worker_bench.Backend, row: Row) -> Row:
    """One ``event-gateway consume roaming`` run against ``backend``, as ``row``."""
    say(
        f"{row.name}: fill {ctx.consume_messages:,} roaming events over {ctx.devices:,} "
        "devices, then drain them with the worker"
    )
    failed: list[str] = []
    try:
        result = worker_bench.run(
            backend=backend,
            amqp_url=ctx.amqp_url,
            postgres_url=ctx.postgres_url,
            queue_type=ctx.queue_type,
            messages=ctx.consume_messages,
            devices=ctx.devices,
            logs=ctx.logs,
            failed=failed,
            profile_dir=ctx.out if ctx.profile else None,
        )
    except worker_bench.WorkerBenchError as exc:
        row.error = str(exc)
        return row
    finally:
        if failed:
            row.notes.append(f"clean-up failed: {'; '.join(failed)}")
    row.rate, row.rss_kib = result.rate, result.rss_kib
    row.notes.append(
        f"{result.messages:,} events ({result.body_bytes:.0f} bytes on average) over "
        f"{result.devices:,} devices drained in {result.seconds:.2f}s, prefetch "
        f"{result.prefetch}, {ctx.queue_type} queue; the worker used "
        f"{100 * result.cpu_share:.0f}% of a core meanwhile; worker start to consuming "
        f"{result.startup_s:.2f}s (not timed); pre-fill ran at {result.fill_rate:,.0f} msg/s"
    )
    row.notes.append(
        f"verified: every device shows its final event; nothing left in the queue, its retry "
        f"queues or .dlq; worker exit status on SIGTERM {result.exit_code}"
    )
    if result.exit_code != 0:
        row.notes.append("the worker did not exit 0 on SIGTERM")
    if result.profile is not None and not result.profile.folded.exists():
        row.notes.append(f"py-spy wrote no profile (see {ctx.out}/worker-{backend}.py-spy.log)")
    elif result.profile is not None:
        summary = profiling.top_frames(result.profile.folded)
        row.notes.append(
            f"profiled with py-spy while draining (numbers perturbed): {result.profile.svg}, "
            f"{result.profile.folded}"
        )
        ctx.appendix += [f"## Profile: {row.name} (py-spy)", "", "```", summary, "```", ""]
    return row


def bench_worker_sqlite(ctx: Context) -> Row:
    """worker-sqlite: the roaming worker draining into a SQLite file."""
    row = Row("worker-sqlite", "event-gateway consume roaming → SQLite file", "ev/s")
    return _bench_worker(ctx, "sqlite", row)


def bench_worker_postgres(ctx: Context) -> Row:
    """worker-postgres: the roaming worker draining into PostgreSQL."""
    row = Row("worker-postgres", "event-gateway consume roaming → PostgreSQL", "ev/s")
    return _bench_worker(ctx, "postgresql", row)


# --- sections -----------------------------------------------------------------------------

Bench = Callable[[Context], Row]


def _run_all(ctx: Context, benches: list[tuple[str, Bench]]) -> list[Row]:
    """Run the selected benches one at a time; a failure becomes that row's error."""
    rows: list[Row] = []
    for target, bench in benches:
        if target not in ctx.only:
            continue
        say(f"--- {target}")
        try:
            rows.append(bench(ctx))
        except Exception as exc:  # one target failing must not hide the others
            name = bench.__doc__.split(":")[0] if bench.__doc__ else target
            rows.append(Row(target, name, error=f"{type(exc).__name__}: {exc}"))
        if rows[-1].error:
            say(f"{target}: ERROR {rows[-1].error}")
    return rows


def ingress_section(ctx: Context) -> list[Row]:
    """HTTP in, confirmed publish out: the gateway, the reference and both ceilings."""
    return _run_all(
        ctx,
        [
            ("gateway", bench_gateway),
            ("gateway-aiohttp", bench_gateway_aiohttp),
            ("gateway-standard", bench_gateway_standard),
            ("gateway-jwt", bench_gateway_jwt),
            ("gateway-workers-2", bench_gateway_workers),
            ("node-peer", bench_node_peer),
            ("go-peer", bench_go_peer),
            ("reference", bench_reference),
            ("bare", bench_bare),
            ("raw-publish", bench_raw_publish),
        ],
    )


def worker_section(ctx: Context) -> list[Row]:
    """Queue in, ack out: the consume ceiling, then the roaming worker on each state store."""
    return _run_all(
        ctx,
        [
            ("raw-consume", bench_raw_consume),
            ("worker-sqlite", bench_worker_sqlite),
            ("worker-postgres", bench_worker_postgres),
        ],
    )


def bench_dlq_replay(ctx: Context) -> Row:
    """dlq-replay: ``event-gateway dlq replay`` moving a DLQ back to its work queue."""
    import replay_bench

    row = Row("dlq-replay", "event-gateway dlq replay: confirm-then-ack moves", "msg/s")
    say(f"dlq replay: fill a DLQ with {ctx.consume_messages:,} dead letters, then replay it")
    try:
        result = replay_bench.run(
            amqp_url=ctx.amqp_url,
            queue_type=ctx.queue_type,
            messages=ctx.consume_messages,
            logs=ctx.logs,
        )
    except replay_bench.ReplayBenchError as exc:
        row.error = str(exc)
        return row
    row.rate = result.rate
    row.notes.append(
        f"{result.messages:,} dead letters of {result.body_bytes} bytes moved in "
        f"{result.seconds:.2f}s (the whole command: start, connect, moves, summary), "
        f"{ctx.queue_type} queues; the command used {result.cpu_s:.2f}s of CPU "
        f"({1e6 * result.cpu_s / result.messages:.0f} µs per message; the rest is waiting for "
        f"the broker); summary {json.dumps(result.summary)}; verified: all in the work queue, "
        f"none left in the DLQ; pre-fill (confirmed publishing alone) ran at "
        f"{result.fill_rate:,.0f} msg/s"
    )
    return row


def tools_section(ctx: Context) -> list[Row]:
    """The operator's tools on a big queue."""
    return _run_all(ctx, [("dlq-replay", bench_dlq_replay)])


SECTIONS: dict[str, Callable[[Context], list[Row]]] = {
    "Ingress: HTTP callback → confirmed publish": ingress_section,
    "Workers: queue → ack": worker_section,
    "Tools: dead letters → work queue": tools_section,
}


# --- main ---------------------------------------------------------------------------------


def _gateway_loop() -> str:
    """``uvloop`` unless the gateway's sources exist and never mention it."""
    if not (ROOT / "gateway" / "cli.py").exists():
        return "uvloop"
    sources = (p.read_text(errors="replace") for p in (ROOT / "gateway").rglob("*.py"))
    return "uvloop" if any("uvloop" in text for text in sources) else "asyncio"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _setup(ctx: Context, body_bytes: int, event_bytes: int) -> list[str]:
    try:
        rabbit = asyncio.run(broker.server_version(ctx.amqp_url))
    except Exception as exc:  # the report still says what it could
        rabbit = f"broker unreachable ({type(exc).__name__}: {exc})"
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    libs = ", ".join(
        f"{d} {_version(d)}"
        for d in (
            "aiohttp",
            "aio-pika",
            "fastapi",
            "uvicorn",
            "pydantic",
            "uvloop",
            "aiosqlite",
            "asyncpg",
        )
    )
    return [
        f"{now}; {os.cpu_count()} cores ({_cpu()}), shared with wrk and the broker; "
        f"Python {platform.python_version()}; {rabbit}; load average before the run {load}"
        " (numbers from a busy machine move by 2x or more: compare within one run)",
        f"load: `wrk -t{ctx.threads} -c{ctx.connections} -d{ctx.duration:g}s --latency` after "
        f"a {ctx.warmup:g}s warm-up; body {body_bytes} bytes (CAMARA roaming-status "
        "CloudEvent), `Content-Type: application/cloudevents+json`, bearer token"
        + (f"; median of {ctx.rounds} interleaved rounds" if ctx.rounds > 1 else ""),
        f"messages persistent, publisher confirms, {ctx.queue_type} queue bound with `#`; raw "
        f"scripts on {ctx.raw_loop} (the gateway's event loop)",
        "rate counts 2xx answers per second (msg/s for raw targets); latencies are wrk's "
        "(per publish for raw publish); peak RSS is VmHWM of the server process and children",
        f"workers: {ctx.consume_messages:,} roaming-status events (~{event_bytes} bytes as "
        f"published, {ctx.devices:,} devices, unique ids, increasing times) pre-filled as the "
        "ingress publishes them, then drained by `event-gateway consume roaming` (default "
        "`[workers]`: prefetch 64; per-delivery info logs to a file); ev/s = events / time "
        "from the worker's consumer appearing to the queue being empty and the last 64 events "
        "in the store; raw consume gets the same messages; `of ceiling` is rate / the "
        "section's ceiling row in this run",
        libs,
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="event-gateway benchmark (make bench)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per target")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds (0: none)")
    parser.add_argument("--connections", type=int, default=64, help="wrk -c; raw publish tasks")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t")
    parser.add_argument(
        "--amqp-url",
        default=os.environ.get("BENCH_AMQP_URL", broker.DEFAULT_URL),
        help="broker (or BENCH_AMQP_URL)",
    )
    parser.add_argument("--queue-type", choices=("quorum", "classic"), default="quorum")
    parser.add_argument(
        "--raw-loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="event loop of the raw scripts; auto = the gateway's",
    )
    parser.add_argument(
        "--consume-messages",
        type=int,
        default=20000,
        help="messages pre-filled and drained by raw consume and by each worker",
    )
    parser.add_argument(
        "--devices", type=int, default=1000, help="distinct devices the worker events rotate over"
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL", worker_bench.DEFAULT_POSTGRES_URL),
        help="PostgreSQL for worker-postgres (or BENCH_POSTGRES_URL); a schema "
        "bench_<random> is created in it and dropped",
    )
    parser.add_argument(
        "--only",
        default=",".join(TARGETS),
        help=f"comma-separated subset of: {', '.join(TARGETS)}; or a section: "
        f"{', '.join(SECTION_TARGETS)}",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the gateway and the workers during their measured run "
        "(bench-results/gateway.svg, worker-postgresql.svg, their .folded, top frames)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every target this many times, interleaved, and report the median round",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    only: set[str] = set()
    for name in args.only.split(","):
        only.update(SECTION_TARGETS.get(name.strip(), (name.strip(),)))
    unknown = only - set(TARGETS)
    if unknown:
        parser.error(f"--only: unknown target(s) {', '.join(sorted(unknown))}")
    args.only = only
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.consume_messages < 1 or args.devices < 1:
        parser.error("--consume-messages and --devices must be at least 1")
    if args.devices > args.consume_messages:
        parser.error("--devices must not exceed --consume-messages")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run every section, print and save the report; the exit status says if it is usable."""
    args = parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    body = payload.body()
    body_file = out / "body.json"
    body_file.write_bytes(body)
    event_body = worker_bench.sample_body()
    event_body_file = out / "event.json"
    event_body_file.write_bytes(event_body)
    ctx = Context(
        out=out,
        body_file=body_file,
        token=payload.new_token(),
        amqp_url=args.amqp_url,
        duration=args.duration,
        warmup=args.warmup,
        connections=args.connections,
        threads=args.threads,
        queue_type=args.queue_type,
        raw_loop=_gateway_loop() if args.raw_loop == "auto" else args.raw_loop,
        consume_messages=args.consume_messages,
        profile=args.profile,
        only=frozenset(args.only),
        rounds=args.rounds,
        event_body_file=event_body_file,
        postgres_url=args.postgres_url,
        devices=args.devices,
    )
    ctx.logs.mkdir(parents=True, exist_ok=True)
    if ctx.only & {
        "gateway",
        "gateway-jwt",
        "gateway-workers-2",
        "node-peer",
        "go-peer",
        "reference",
        "bare",
    }:
        loadgen.ensure_wrk()
    setup = _setup(ctx, len(body), len(event_body))
    rounds: dict[str, list[list[Row]]] = {title: [] for title in SECTIONS}
    for number in range(1, ctx.rounds + 1):
        if ctx.rounds > 1:
            say(f"=== round {number} of {ctx.rounds}")
        for title, section in SECTIONS.items():
            rounds[title].append(section(ctx))
        ctx.profile = False  # one profile is enough
    sections = {
        title: [report.median_round(list(same)) for same in zip(*runs, strict=True)]
        for title, runs in rounds.items()
        if runs and runs[0]
    }
    by_name = {row.name: row for rows in sections.values() for row in rows}
    found = report.checks(by_name)
    text = report.markdown("event-gateway benchmark", setup, sections, found)
    if ctx.appendix:
        text += "\n" + "\n".join(ctx.appendix)
    print(text)
    (out / "latest.md").write_text(text, encoding="utf-8")
    (out / "latest.json").write_text(
        json.dumps(
            {
                "setup": setup,
                "rows": [dataclasses.asdict(row) for row in by_name.values()],
                "checks": [dataclasses.asdict(check) for check in found],
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    say(f"report written to {out / 'latest.md'}")
    broken = any(
        (row.error and not row.error.startswith("skipped:")) or row.lost for row in by_name.values()
    )
    missed = any(check.ok is False for check in found)
    return 1 if broken or (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
