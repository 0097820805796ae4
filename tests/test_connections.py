"""The connection cap: kept below the file-descriptor limit, raising the soft limit first."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway.connections import RESERVED_FDS

PROGRAM = (
    "import resource\n"
    "from gateway.connections import connection_cap\n"
    "print(connection_cap(1024), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
)


@pytest.mark.parametrize(
    ("nofile", "cap", "soft"),
    [
        ("1024", 1024 - RESERVED_FDS, 1024),  # hard limit 1024: the cap gives way
        ("300:5000", 1024, 1024 + RESERVED_FDS),  # soft limit raised as far as needed
        ("20000", 1024, 20000),  # plenty: max_connections as configured
    ],
)
def test_cap_fits_under_the_fd_limit(nofile: str, cap: int, soft: int) -> None:
    """The cap plus the reserve never exceeds the (possibly raised) soft limit."""
    done = subprocess.run(
        ["prlimit", f"--nofile={nofile}", "--", sys.executable, "-c", PROGRAM],
        capture_output=True,
        check=True,
        timeout=30,
        text=True,
    )
    assert done.stdout.split() == [str(cap), str(soft)]
