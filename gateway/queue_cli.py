"""``event-gateway rejected|unrouted|dlq list|replay``: the queue tools' commands (contract §9).

``list`` prints one JSON line per message as it reads, oldest first, and leaves the queue as
it was; a closed pipe (``| head``) ends it quietly with exit 0. ``replay`` moves messages
(confirm, then ack; see ``consumers.replay``), shows a progress bar on stderr when that is a
terminal, and ends with ``{"replayed": N, "failed": M}`` on stdout, also on Ctrl-C; exit 0
when every message moved, 1 when some did not (or the run was interrupted). ``--dry-run``
prints what would happen to each message, moves nothing, and ends with the same line plus
``"dry_run": true``. Exit 2 for usage errors, 1 for runtime ones (one line on stderr), as
every command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

from aiormq.abc import AbstractConnection, DeliveredMessage
from aiormq.exceptions import AMQPError

from gateway.settings import Settings

PROG = "event-gateway"
LineOf = Callable[[DeliveredMessage], dict[str, Any]]
Wanted = Callable[[DeliveredMessage], bool] | None


def add_queue_commands(commands: argparse._SubParsersAction[Any]) -> None:
    """``rejected``, ``unrouted`` and ``dlq``, each with ``list`` and ``replay``."""
    rejected = commands.add_parser(
        "rejected",
        help="list the requests kept on <prefix>.rejected, or replay them through today's "
        "config and adapters",
    )
    actions = rejected.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action in ("list", "replay"):
        sub = _action(actions, action, "kept requests")
        sub.add_argument("--source", metavar="S", help="only the requests to this source")
    unrouted = commands.add_parser(
        "unrouted",
        help="list the events no queue was bound for, or publish them again after a binding "
        "was added",
    )
    actions = unrouted.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action in ("list", "replay"):
        _action(actions, action, "unrouted events")
    dlq = commands.add_parser(
        "dlq", help="list a worker's dead-lettered messages, or move them back to its queue"
    )
    actions = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action in ("list", "replay"):
        sub = _action(actions, action, "dead letters")
        sub.add_argument(
            "queue",
            metavar="QUEUE",
            help="the work queue, short (roaming), full (events.roaming) or its .dlq",
        )
    for parser, command in ((rejected, _rejected), (unrouted, _unrouted), (dlq, _dlq)):
        parser.set_defaults(func=command)


def _action(
    actions: argparse._SubParsersAction[Any], action: str, what: str
) -> argparse.ArgumentParser:
    if action == "list":
        summary = f"print the {what} as JSON lines, oldest first, leaving them in place"
    else:
        summary = f"move the {what} on (confirmed, then acked) and print a summary"
    sub: argparse.ArgumentParser = actions.add_parser(action, help=summary)
    sub.add_argument("--limit", type=_positive, metavar="N", help="at most N messages")
    if action == "replay":
        sub.add_argument(
            "--dry-run", action="store_true", help="move nothing; print what would happen"
        )
    sub.add_argument("--config", metavar="F", help="TOML config file (default $GATEWAY_CONFIG)")
    return sub


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} must be at least 1")
    return number


# --- the three commands ------------------------------------------------------------------


def _rejected(args: argparse.Namespace, settings: Settings) -> int:
    from gateway.rejected_replay import rejected_line, rejected_planner, source_of
    from gateway.topology import Names

    queue = Names.for_prefix(settings.amqp.exchange).rejected
    wanted: Wanted = None
    if args.source is not None:
        source = str(args.source)

        def wanted(message: DeliveredMessage) -> bool:
            return source_of(message) == source

    if args.action == "list":
        return _list(settings, queue, rejected_line, args.limit, wanted)
    return _replay(settings, queue, rejected_planner(settings), args, wanted)


def _unrouted(args: argparse.Namespace, settings: Settings) -> int:
    from consumers.unrouted import ComebackCounter, unrouted_line, unrouted_planner
    from gateway.topology import Names

    names = Names.for_prefix(settings.amqp.exchange)
    if args.action == "list":
        return _list(settings, names.unrouted, unrouted_line, args.limit, None)
    return _replay(
        settings,
        names.unrouted,
        None,
        args,
        None,
        comeback=lambda connection: ComebackCounter(connection, names.unrouted),
        comeback_planner=lambda run_id: unrouted_planner(names.exchange, run_id),
    )


def _dlq(args: argparse.Namespace, settings: Settings) -> int:
    from consumers.dlq import dlq_line, dlq_name, dlq_planner, work_queue

    queue = work_queue(settings.amqp, args.queue)
    if args.action == "list":
        return _list(settings, dlq_name(queue), dlq_line, args.limit, None)
    return _replay(settings, dlq_name(queue), dlq_planner(queue), args, None, destination=queue)


# --- list ----------------------------------------------------------------------------------


def _list(
    settings: Settings, queue: str, line_of: LineOf, limit: int | None, wanted: Wanted
) -> int:
    from consumers.message_json import json_line
    from consumers.queue_reader import reading

    async def main(
        connection: AbstractConnection, stop: asyncio.Event, hurry: asyncio.Event
    ) -> int:
        printed = 0
        async with reading(connection, queue, hurry=hurry) as reader:
            while limit is None or printed < limit:
                message = await _unless_stopped(reader.next(), stop)
                if message is None:
                    break
                if wanted is not None and not wanted(message):
                    continue
                if not _write(json_line(line_of(message))):
                    break  # the reader of our output is gone (| head): stop quietly
                printed += 1
        return 1 if stop.is_set() else 0

    return _run(settings, main)


# --- replay --------------------------------------------------------------------------------


def _replay(
    settings: Settings,
    queue: str,
    planner: Any,
    args: argparse.Namespace,
    wanted: Wanted,
    *,
    destination: str | None = None,
    comeback: Callable[[AbstractConnection], Any] | None = None,
    comeback_planner: Callable[[str], Any] | None = None,
) -> int:
    from consumers.message_json import json_line
    from consumers.replay import Summary, replay
    from consumers.tool_connection import ready_messages

    async def main(
        connection: AbstractConnection, stop: asyncio.Event, hurry: asyncio.Event
    ) -> int:
        total = await ready_messages(connection, queue)
        if destination is not None:
            await ready_messages(connection, destination)  # NoSuchQueue before anything moves
        if args.limit is not None:
            total = min(total, args.limit)
        plan = planner
        counter = None
        if comeback is not None and comeback_planner is not None:
            counter = comeback(connection)
            plan = comeback_planner(counter.run_id)
        if args.dry_run:
            return await _dry_run(connection, queue, plan, args.limit, wanted, stop, hurry)
        summary = Summary()
        try:
            with _progress(None if wanted else total) as advance:
                if counter is not None:
                    await counter.start()
                await replay(
                    connection,
                    queue,
                    plan,
                    publish_timeout_s=settings.amqp.publish_timeout_s,
                    stop=stop,
                    limit=args.limit,
                    wanted=wanted,
                    progress=advance,
                    summary=summary,
                    hurry=hurry,
                )
                if counter is not None:
                    came_back = await counter.finish()
                    summary.replayed -= came_back
                    summary.failed += came_back
        finally:
            _write(json_line(summary.as_json()))
        return 1 if summary.failed or stop.is_set() else 0

    return _run(settings, main)


async def _dry_run(
    connection: AbstractConnection,
    queue: str,
    planner: Any,
    limit: int | None,
    wanted: Wanted,
    stop: asyncio.Event,
    hurry: asyncio.Event,
) -> int:
    from consumers.message_json import json_line, text
    from consumers.queue_reader import reading

    replayed = failed = 0
    async with reading(connection, queue, hurry=hurry) as reader:
        while limit is None or replayed + failed < limit:
            message = await _unless_stopped(reader.next(), stop)
            if message is None:
                break
            if wanted is not None and not wanted(message):
                continue
            plan = planner(message)
            replayed, failed = (replayed + 1, failed) if plan.moves else (replayed, failed + 1)
            line = {"message_id": text(message.header.properties.message_id), **plan.detail}
            if not _write(json_line({**line, "replays": plan.moves})):
                return 0
    _write(json_line({"replayed": replayed, "failed": failed, "dry_run": True}))
    return 1 if failed or stop.is_set() else 0


@contextlib.contextmanager
def _progress(total: int | None) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr when stderr is a terminal; else nothing is drawn."""
    if not sys.stderr.isatty():
        yield lambda _: None
        return
    from tqdm import tqdm

    with tqdm(total=total, file=sys.stderr, unit="msg", desc="replay", leave=True) as bar:

        def advance(count: int) -> None:
            bar.update(count)

        yield advance


# --- running -------------------------------------------------------------------------------


def _run(
    settings: Settings,
    main: Callable[[AbstractConnection, asyncio.Event, asyncio.Event], Any],
) -> int:
    """Connect, run ``main(connection, stop, hurry)``: the first SIGINT/SIGTERM sets ``stop``,
    a second ``hurry``; a broker or queue problem is one line on stderr and exit 1."""
    from consumers.tool_connection import BrokerUnreachable, NoSuchQueue, connect
    from gateway.loop import run

    async def runner() -> int:
        loop = asyncio.get_running_loop()
        stop, hurry = asyncio.Event(), asyncio.Event()

        def on_signal() -> None:
            if stop.is_set():
                hurry.set()
                return
            stop.set()
            print(
                f"{PROG}: stopping: the moves under way finish, the rest goes back in order "
                "(again to skip keeping the order)",
                file=sys.stderr,
                flush=True,
            )

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal)
        connection = await connect(settings.amqp)
        try:
            code: int = await main(connection, stop, hurry)
        finally:
            with contextlib.suppress(Exception):
                await connection.close()
        return code

    try:
        return run(runner())
    except (BrokerUnreachable, NoSuchQueue) as exc:
        return _fail(str(exc))
    except (AMQPError, OSError, TimeoutError) as exc:
        return _fail(f"broker error: {exc or type(exc).__name__}")
    except KeyboardInterrupt:
        return 1
    except Exception as exc:  # a runtime failure is one line, never a traceback
        return _fail(f"{type(exc).__name__}: {exc}")


async def _unless_stopped(waiting: Any, stop: asyncio.Event) -> DeliveredMessage | None:
    """``await waiting``, or None as soon as ``stop`` is set."""
    task = asyncio.ensure_future(waiting)
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None
    result: DeliveredMessage | None = task.result()
    return result


def _write(line: bytes) -> bool:
    """Write one line to stdout now; False once nobody reads it any more (``| head``)."""
    try:
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null so that is quiet too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return False
    return True


def _fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 1
