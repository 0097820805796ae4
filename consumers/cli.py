"""The worker side of the ``event-gateway`` CLI: ``consume`` and ``state`` (the queue tools,
``dlq`` among them, are in ``gateway.queue_cli``).

``gateway.cli`` calls ``add_worker_commands(subparsers)``; each subcommand sets
``func(args, settings) -> int`` (exit code) as its default, to be called after the settings
are loaded (``run_command`` does that, with the exit-2 handling of a bad config). Exit codes:
0 success, 1 runtime failure, 2 usage or configuration error (one line on stderr).

``python -m consumers.cli`` runs the same commands on their own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
from typing import Any

import orjson

from consumers.handlers import HANDLERS, builtin_spec
from consumers.loader import HandlerLoadError, load_handler
from consumers.metrics import WorkerMetrics
from consumers.retry import error_line
from consumers.worker import Worker, WorkerSpec, run_worker
from gateway.cloudevent import rfc3339
from gateway.logs import configure_logging, get_logger
from gateway.loop import run as run_event_loop
from gateway.settings import ConfigError, Settings, load_settings
from gateway.topology import Names

__all__ = [
    "add_worker_commands",
    "consume_command",
    "main",
    "run_command",
    "run_worker",
    "state_command",
]

STATE_KINDS = ("device", "subscription", "message", "inbound")
PROG = "event-gateway"

log = get_logger("consumers.cli")


def add_worker_commands(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``consume`` and ``state`` (contract §6) to a CLI's subparsers."""
    consume = subparsers.add_parser(
        "consume",
        help="run a worker: a built-in one, or --queue/--bind/--handler for your own",
        description="Consume events from RabbitMQ with a built-in handler or your own "
        "async function (module:function). Stops on SIGTERM/SIGINT after draining.",
    )
    consume.add_argument(
        "worker", nargs="?", choices=sorted(HANDLERS), help="built-in worker to run"
    )
    consume.add_argument(
        "--queue",
        help="queue name for a custom handler (prefixed with the "
        "[amqp] exchange unless it already is)",
    )
    consume.add_argument(
        "--bind",
        action="append",
        default=[],
        metavar="PATTERN",
        help="routing-key pattern to bind the queue to (repeatable)",
    )
    consume.add_argument(
        "--handler",
        metavar="MODULE:FUNCTION",
        help="async def handle(event: consumers.Event) -> None",
    )
    _config_argument(consume)
    consume.add_argument(
        "--concurrency",
        type=_positive_int,
        metavar="N",
        help="handlers in flight at most (overrides [workers] prefetch)",
    )
    consume.add_argument(
        "--metrics-port",
        type=_port,
        metavar="P",
        help="serve /healthz (alive), /readyz (consuming) and /metrics on this port",
    )
    consume.set_defaults(func=consume_command)

    state = subparsers.add_parser(
        "state",
        help="print what the built-in workers know about a device, subscription, "
        "message or inbound SMS, as one JSON object",
    )
    state.add_argument("kind", choices=STATE_KINDS)
    state.add_argument("key", help="device key, subscription id, or Notify message id")
    _config_argument(state)
    state.set_defaults(func=state_command)


def main(argv: list[str] | None = None) -> int:
    """``python -m consumers.cli``: the worker commands without the ingress ones."""
    parser = argparse.ArgumentParser(prog=PROG)
    add_worker_commands(parser.add_subparsers(dest="command", required=True))
    return run_command(parser.parse_args(argv))


def run_command(args: argparse.Namespace) -> int:
    """Load the settings (``--config``), configure logging, run ``args.func``."""
    try:
        settings = load_settings(getattr(args, "config", None))
    except ConfigError as exc:
        return _usage_error(str(exc))
    configure_logging(settings.log_format)
    code: int = args.func(args, settings)
    return code


# --- consume ---------------------------------------------------------------------------------


def consume_command(args: argparse.Namespace, settings: Settings) -> int:
    """``consume``: run one worker until SIGTERM/SIGINT."""
    custom = args.queue is not None or args.bind or args.handler is not None
    if args.worker is not None and custom:
        return _usage_error(
            "consume takes a built-in worker name or --queue/--bind/--handler, not both"
        )
    if args.concurrency is not None:
        settings = dataclasses.replace(
            settings, workers=dataclasses.replace(settings.workers, prefetch=args.concurrency)
        )
    if args.worker is not None:
        spec = builtin_spec(settings.amqp, args.worker)
    else:
        missing = [
            flag
            for flag, value in (
                ("--queue", args.queue),
                ("--bind", args.bind),
                ("--handler", args.handler),
            )
            if not value
        ]
        if missing:
            return _usage_error(
                f"consume needs a built-in worker name ({', '.join(HANDLERS)}) "
                f"or --queue, --bind and --handler; missing {', '.join(missing)}"
            )
        if any(not pattern.strip() for pattern in args.bind):
            return _usage_error("--bind needs a non-empty routing-key pattern")
        # Like uvicorn's --app-dir: the handler's module is looked up from where you run it.
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            handler = load_handler(args.handler)
        except HandlerLoadError as exc:
            return _usage_error(str(exc))
        spec = WorkerSpec(
            queue=Names.for_prefix(settings.amqp.exchange).queue(args.queue),
            bindings=tuple(args.bind),
            handler=handler,
        )
    metrics_port = args.metrics_port
    if metrics_port is None:
        metrics_port = settings.workers.metrics_port
    return _run_async(_consume(settings, spec, metrics_port))


async def _consume(settings: Settings, spec: WorkerSpec, metrics_port: int | None) -> int:
    """Run the worker; the first SIGTERM/SIGINT drains, a second one cancels at once (exit 1)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    main_task = asyncio.current_task()
    assert main_task is not None
    signals: list[int] = []

    def on_signal(signum: int) -> None:
        signals.append(signum)
        if len(signals) == 1:
            log.info("signal received; draining", signal=signal.Signals(signum).name)
            stop.set()
        else:
            log.warning(
                "second signal; exiting without draining", signal=signal.Signals(signum).name
            )
            main_task.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    worker = Worker(settings, spec, metrics=WorkerMetrics())
    try:
        async with contextlib.AsyncExitStack() as stack:
            if metrics_port is not None:
                from consumers.health import serve_health

                port = await stack.enter_async_context(
                    serve_health(
                        metrics_port,
                        worker.metrics.registry,
                        alive=lambda: worker.alive,
                        ready=lambda: worker.ready,
                    )
                )
                log.info("serving /healthz, /readyz and /metrics", port=port)
            await worker.run(stop)
    except asyncio.CancelledError:
        if len(signals) > 1:
            return 1
        raise
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    return 0


# --- state -----------------------------------------------------------------------------------


def state_command(args: argparse.Namespace, settings: Settings) -> int:
    """``state device|subscription|message|inbound KEY``: one JSON object on stdout."""
    return _run_async(_state(settings, args.kind, args.key))


async def _state(settings: Settings, kind: str, key: str) -> int:
    from consumers.state import open_store

    store = await open_store(settings.state.url)
    try:
        found: dict[str, Any] | None = await getattr(store, kind)(key)
    finally:
        await store.close()
    if found is None:
        print(f"{PROG}: no {kind} {key!r} in the state store", file=sys.stderr)
        return 1
    _print_json(found)
    return 0


# --- shared ----------------------------------------------------------------------------------


def _run_async(coro: Any) -> int:
    """Run a command's coroutine; a runtime failure is one line on stderr and exit 1."""
    from consumers.state import InvalidStateURL

    try:
        code: int = run_event_loop(coro)
    except InvalidStateURL as exc:
        return _usage_error(str(exc))
    except KeyboardInterrupt:
        return 1
    except Exception as exc:
        log.error("command failed", error=error_line(exc))
        print(f"{PROG}: {error_line(exc)}", file=sys.stderr)
        return 1
    return code


def _print_json(value: Any) -> None:
    sys.stdout.buffer.write(
        orjson.dumps(value, default=_json_default, option=orjson.OPT_PASSTHROUGH_DATETIME) + b"\n"
    )
    sys.stdout.flush()


def _json_default(value: Any) -> Any:
    from datetime import datetime

    if isinstance(value, datetime):
        return rfc3339(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _usage_error(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 2


def _config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="F",
        help="TOML config file (default: $GATEWAY_CONFIG, else built-in defaults)",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number 0-65535")
    return value


if __name__ == "__main__":
    sys.exit(main())
