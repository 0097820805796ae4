"""``serve --workers N``: N ingress processes sharing one port (SO_REUSEPORT).

For bare-metal hosts where one process's core is the limit. The supervisor only watches:
each child is a whole ``event-gateway serve`` with its own broker connection, listening with
``SO_REUSEPORT`` so the kernel spreads connections across them. The shutdown sequence:

1. SIGTERM/SIGINT is passed to every child, which drains as a single ``serve`` does;
2. the supervisor waits for all of them (bounded by ``SHUTDOWN_TIMEOUT_S``), then kills the rest;
3. a second signal kills every child at once.

A child whose supervisor is gone (killed with SIGKILL, say) drains and exits by itself.
A child that dies on its own is started again after ``RESTART_DELAY_S`` (logged), so one
crash does not take the port's share of connections with it. Children write their metrics
to a directory the supervisor owns, so any child's ``/metrics`` shows every process
(``gateway.sibling_metrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from types import FrameType

from gateway.logs import get_logger

log = get_logger("gateway.supervisor")

SHUTDOWN_TIMEOUT_S = 20.0
RESTART_DELAY_S = 1.0
POLL_S = 0.2


async def stop_when_orphaned(stop: asyncio.Event, supervisor: int, interval_s: float = 1.0) -> None:
    """In a child: drain and exit (set ``stop``) once ``supervisor`` is no longer its parent
    (killed with SIGKILL, say, even before this child started), so no ingress process
    outlives it holding the port."""
    while not stop.is_set():
        if os.getppid() != supervisor:
            log.warning("the supervisor is gone; stopping", supervisor=supervisor)
            stop.set()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)


def worker_count(value: str) -> int:
    """``--workers``: a positive number, or ``auto`` for the CPUs this process may use."""
    if value == "auto":
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            return os.cpu_count() or 1
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"--workers must be a positive number or 'auto', not {value!r}")
    return int(value)


def child_argv(argv: Sequence[str], slot: int, directory: str) -> list[str]:
    """The command line of child ``slot``: this ``serve`` with ``--workers`` taken out and
    the hidden child options put in."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        out.append(arg)
    launcher = "from gateway.cli import main; main()"
    return [
        sys.executable,
        "-c",
        launcher,
        *out,
        "--process-slot",
        str(slot),
        "--process-dir",
        directory,
        "--process-supervisor",
        str(os.getpid()),
    ]


def supervise(argv: Sequence[str], count: int) -> int:
    """Run ``count`` children until a signal; 0 when they all stopped cleanly."""
    signals: list[int] = []  # the handler only records; the loop acts (no logging in a handler)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        signals.append(signum)

    with tempfile.TemporaryDirectory(prefix="event-gateway-metrics-") as directory:
        children: dict[int, subprocess.Popen[bytes]] = {}
        previous = {
            signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for slot in range(count):
                children[slot] = _start(argv, slot, directory)
            log.info("ingress processes started", processes=count)
            restart_at: dict[int, float] = {}
            while not signals:
                time.sleep(POLL_S)
                for slot, child in list(children.items()):
                    if signals or child.poll() is None:
                        continue
                    if slot not in restart_at:
                        log.error(
                            "ingress process exited; starting it again",
                            slot=slot,
                            code=child.returncode,
                        )
                        restart_at[slot] = time.monotonic() + RESTART_DELAY_S
                    elif time.monotonic() >= restart_at[slot]:
                        del restart_at[slot]
                        children[slot] = _start(argv, slot, directory)
            log.info("stopping the ingress processes", signal=signal.Signals(signals[0]).name)
            for child in children.values():
                _send(child, signal.SIGTERM)
            codes = _wait_all(children, SHUTDOWN_TIMEOUT_S, forced=lambda: len(signals) > 1)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    forced = len(signals) > 1
    if forced:
        log.warning("second signal: the ingress processes were killed")
    failed = [code for code in codes if code not in (0, -signal.SIGTERM)]
    if forced or failed:
        return 1
    log.info("ingress processes stopped", processes=count)
    return 0


def _start(argv: Sequence[str], slot: int, directory: str) -> subprocess.Popen[bytes]:
    # The command is this very program with the operator's own arguments.
    return subprocess.Popen(child_argv(argv, slot, directory))  # noqa: S603


def _wait_all(
    children: dict[int, subprocess.Popen[bytes]], timeout_s: float, forced: Callable[[], bool]
) -> list[int]:
    """Wait for every child until ``timeout_s`` or a second signal, then kill the rest."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not forced():
        if all(child.poll() is not None for child in children.values()):
            break
        time.sleep(POLL_S)
    for child in children.values():
        _send(child, signal.SIGKILL)
    return [child.wait() for child in children.values()]


def _send(child: subprocess.Popen[bytes], signum: int) -> None:
    if child.poll() is None:
        child.send_signal(signum)
