"""Log lines go out in batches even under ``PYTHONUNBUFFERED=1`` (set by many images, CI shells
and this project's old Dockerfile), which makes ``sys.stdout.buffer`` an unbuffered file."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import io, os, sys
from gateway.logs import BufferedBytesLogger
assert isinstance(sys.stdout.buffer, io.FileIO), "PYTHONUNBUFFERED=1 left stdout buffered"
logger = BufferedBytesLogger(sys.stdout.buffer, interval=3600)
for n in range(100):
    logger.info(b'{"event":"line","n":%d}' % n)
if sys.argv[1] == "flush":
    logger.flush()
os._exit(0)  # no atexit flush: only what the logger already wrote reaches stdout
"""


def _run(mode: str) -> bytes:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def test_lines_wait_in_the_loggers_own_buffer_under_pythonunbuffered() -> None:
    """100 lines logged with PYTHONUNBUFFERED=1 are still in the logger's buffer (not one
    write per line): a process gone before the flush leaves nothing on stdout."""
    assert _run("exit") == b""


def test_a_flush_writes_every_buffered_line() -> None:
    """The flush (every ``interval`` and at exit) writes all the buffered lines, in order."""
    lines = _run("flush").splitlines()
    assert lines == [b'{"event":"line","n":%d}' % n for n in range(100)]
