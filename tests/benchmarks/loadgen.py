"""HTTP load with ``wrk``: install it when missing, run ``post.lua``, parse its result line."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import measure

POST_LUA = Path(__file__).with_name("post.lua")


class LoadError(Exception):
    """wrk is missing and cannot be installed, or a run failed."""


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run reported (latencies in ms)."""

    requests: int
    seconds: float
    ok2xx: int
    non2xx: int
    statuses: dict[str, int]
    errors: dict[str, int]
    p50_ms: float
    p99_ms: float
    output: str

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def socket_errors(self) -> int:
        return sum(n for kind, n in self.errors.items() if kind != "status")


def ensure_wrk() -> str:
    """The path of ``wrk``, installed with apt-get (after an update if needed) when absent."""
    found = shutil.which("wrk")
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        done = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise LoadError(f"apt-get install wrk failed: {done.stderr.strip()[-300:]}")
    found = shutil.which("wrk")
    if not found:
        raise LoadError("wrk is still not on PATH after apt-get install")
    return found


def run_wrk(
    url: str,
    *,
    body_file: Path,
    token: str,
    seconds: float,
    connections: int,
    threads: int,
) -> WrkResult:
    """``wrk -t<threads> -c<connections> -d<seconds>s --latency -s post.lua url``."""
    argv = [
        ensure_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "-s",
        str(POST_LUA),
        url,
    ]
    env = {**os.environ, "BENCH_BODY_FILE": str(body_file), "BENCH_TOKEN": token}
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if done.returncode != 0:
        raise LoadError(f"wrk exited with {done.returncode}: {done.stderr.strip()[-300:]}")
    try:
        parsed: dict[str, Any] = measure.parse_result(done.stdout)
    except ValueError:
        raise LoadError(f"wrk printed no result: {done.stdout[-300:]}") from None
    return WrkResult(
        requests=parsed["requests"],
        seconds=parsed["duration_us"] / 1e6,
        ok2xx=parsed["ok2xx"],
        non2xx=parsed["non2xx"],
        statuses=parsed["statuses"],
        errors=parsed["errors"],
        p50_ms=parsed["p50_us"] / 1000,
        p99_ms=parsed["p99_us"] / 1000,
        output=done.stdout,
    )
