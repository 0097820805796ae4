"""The ``event-gateway`` command: thin. Read settings, configure logging, run.

Exit codes: 0 success, 2 usage or config error (one line on stderr), 1 runtime failure.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn

from gateway import __version__
from gateway.settings import ConfigError, Settings, load_settings

Command = Callable[[argparse.Namespace, Settings], int]


LOG_LEVELS = ("debug", "info", "warning", "error")
TRACED_COMMANDS = frozenset({"serve", "run", "consume"})  # the ones that handle events


class _Commands(argparse._SubParsersAction):  # type: ignore[type-arg]
    """Subcommands whose ``--help`` repeats their one-line ``help`` as a description (unless
    they give their own), and which all take ``--log-level``."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        summary = kwargs.get("help")
        if summary and not kwargs.get("description"):
            kwargs["description"] = summary[0].upper() + summary[1:] + "."
        parser: argparse.ArgumentParser = super().add_parser(name, **kwargs)
        _log_level_option(parser)
        return parser


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _Commands)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _log_level_option(parser: argparse.ArgumentParser) -> None:
    # SUPPRESS: a subcommand that was not given the option leaves the top-level value alone.
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=argparse.SUPPRESS,
        help="least severe log lines to print (default info)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="event-gateway",
        description="Authenticated telecom and messaging callbacks in, confirmed CloudEvents on "
        "RabbitMQ out; workers that keep device, subscription and message state.",
    )
    parser.add_argument("--version", action="version", version=f"event-gateway {__version__}")
    _log_level_option(parser)
    commands = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser, metavar="COMMAND"
    )

    serve = commands.add_parser("serve", help="run the HTTP ingress")
    _config_option(serve)
    serve.add_argument("--host", help="listen address (default [http] host)")
    serve.add_argument("--port", type=int, help="listen port (default [http] port)")
    serve.add_argument(
        "--workers",
        metavar="N",
        default="1",
        help="ingress processes sharing the port (SO_REUSEPORT), each with its own broker "
        "connection; 'auto' = one per CPU (default 1)",
    )
    # Set by the supervisor of ``--workers N`` for each child; not for people.
    serve.add_argument("--process-slot", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--process-dir", help=argparse.SUPPRESS)
    serve.add_argument("--process-supervisor", type=int, help=argparse.SUPPRESS)
    serve.set_defaults(func=_serve)

    run = commands.add_parser("run", help="ingress and the three built-in workers in one process")
    _config_option(run)
    run.set_defaults(func=_run)

    topology = commands.add_parser("topology", help="declare exchanges, queues and bindings")
    _config_option(topology)
    topology.set_defaults(func=_topology)

    hash_token = commands.add_parser(
        "hash-token", help='read a token on stdin, print "sha256:<hex>" for the config'
    )
    hash_token.add_argument(
        "--generate", action="store_true", help="make a new random token; print it, then its digest"
    )
    hash_token.set_defaults(func=_hash_token, needs_settings=False)

    from consumers.cli import add_worker_commands
    from gateway.queue_cli import add_queue_commands

    add_worker_commands(commands)
    add_queue_commands(commands)
    return parser


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="F", help="TOML config file (default $GATEWAY_CONFIG)")


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    handler: Command = args.func
    settings = Settings()
    if getattr(args, "needs_settings", True):
        try:
            settings = load_settings(getattr(args, "config", None))
        except ConfigError as exc:
            _fail_config(str(exc))
    import logging

    from gateway.logs import configure_logging

    level = getattr(args, "log_level", "info")
    configure_logging(settings.log_format, level=logging.getLevelNamesMapping()[level.upper()])
    if args.command in TRACED_COMMANDS:
        from gateway.tracing import configure_tracing

        configure_tracing()  # off unless the otel extra is installed and OTEL_* ask for it
    sys.exit(handler(args, settings))


def _fail_config(message: str) -> NoReturn:
    print(f"event-gateway: config error: {message}", file=sys.stderr)
    raise SystemExit(2)


def run_async(main: Coroutine[Any, Any, int]) -> int:
    """Run a command's coroutine on the shared loop; Ctrl-C before the handlers exist is 1."""
    from gateway.loop import run

    try:
        return run(main)
    except KeyboardInterrupt:
        return 1


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.app import METRICS, create_app
    from gateway.server import install_signal_handlers, serve_app
    from gateway.supervisor import supervise, worker_count

    try:
        processes = worker_count(args.workers)
    except ValueError as exc:
        print(f"event-gateway: serve: {exc}", file=sys.stderr)
        return 2
    if processes > 1 and args.process_slot is None:
        return supervise(args.argv, processes)
    host = args.host or settings.http.host
    port = settings.http.port if args.port is None else args.port
    child = (
        args.process_slot is not None
        and args.process_dir is not None
        and args.process_supervisor is not None
    )

    async def main() -> int:
        stop = asyncio.Event()
        install_signal_handlers(stop)
        app = create_app(settings)
        companions = []
        if child:
            from pathlib import Path

            from gateway.sibling_metrics import SiblingMetrics
            from gateway.supervisor import stop_when_orphaned

            siblings = SiblingMetrics(
                app[METRICS].registry, Path(args.process_dir), args.process_slot
            )
            app[METRICS].renderer = siblings.render
            companions.append(lambda: siblings.publish_until(stop))
            companions.append(lambda: stop_when_orphaned(stop, args.process_supervisor))
        await serve_app(app, host, port, stop, companions=companions, reuse_port=child)
        return 0

    return run_async(main())


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.combined import run_combined

    return run_async(run_combined(settings))


def _topology(args: argparse.Namespace, settings: Settings) -> int:
    import aio_pika
    from aiormq.exceptions import AMQPError

    from gateway.topology import declare_all

    async def main() -> int:
        connection = None
        for url in settings.amqp.urls:  # the first node of the cluster that answers
            try:
                connection = await aio_pika.connect(url, timeout=10)
                break
            except (AMQPError, OSError, TimeoutError) as exc:
                error = exc
        if connection is None:
            print(
                f"event-gateway: cannot reach RabbitMQ: {error or type(error).__name__}",
                file=sys.stderr,
            )
            return 1
        async with connection:
            try:
                await declare_all(await connection.channel(), settings.amqp, settings.workers)
            except AMQPError as exc:
                print(f"event-gateway: declaring the topology failed: {exc}", file=sys.stderr)
                return 1
        print(f"topology declared on exchange {settings.amqp.exchange!r}")
        return 0

    return run_async(main())


def _hash_token(args: argparse.Namespace, _settings: Settings) -> int:
    from gateway.auth import generate_token, hash_token

    if args.generate:
        token = generate_token()
        print(token)
        print(hash_token(token))
        return 0
    token = sys.stdin.read()
    token = token[:-2] if token.endswith("\r\n") else token.removesuffix("\n")
    if not token:
        print("event-gateway: hash-token: no token on stdin", file=sys.stderr)
        return 2
    print(hash_token(token))
    return 0


if __name__ == "__main__":  # pragma: no cover
    main()
