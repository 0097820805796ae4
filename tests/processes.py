"""Run ``event-gateway`` commands as real processes: output to files, readiness, stopping."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

EVENT_GATEWAY = str(Path(sys.executable).parent / "event-gateway")
ROOT = Path(__file__).resolve().parents[1]


def clean_env() -> dict[str, str]:
    """The caller's environment without GATEWAY_* overrides (the config file decides)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}


@dataclass
class GatewayProcess:
    """One ``event-gateway`` process; stdout and stderr go to files named after it."""

    name: str
    args: tuple[str, ...]
    logs: Path
    process: subprocess.Popen[bytes] = field(init=False)

    def start(self) -> GatewayProcess:
        with (
            (self.logs / f"{self.name}.out").open("wb") as out,
            (self.logs / f"{self.name}.err").open("wb") as err,
        ):
            self.process = subprocess.Popen(
                [EVENT_GATEWAY, *self.args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=ROOT,
                env=clean_env(),
            )
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stderr_tail(self, lines: int = 20) -> str:
        path = self.logs / f"{self.name}.err"
        text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would; reaps the process."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    async def terminate(self, timeout: float) -> int | None:
        """SIGTERM and wait up to ``timeout``; the exit code, or None if it did not exit."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.process.wait, timeout)
        except subprocess.TimeoutExpired:
            return None


async def wait_http_ready(
    session: aiohttp.ClientSession, proc: GatewayProcess, port: int, timeout: float
) -> None:
    """Poll ``/readyz`` until 200; fail early if the process died, or after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    url = f"http://127.0.0.1:{port}/readyz"
    while True:
        assert proc.alive(), f"{proc.name} exited {proc.process.returncode}:\n{proc.stderr_tail()}"
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                if response.status == 200:
                    return
        except (aiohttp.ClientError, TimeoutError):
            pass
        assert loop.time() < deadline, f"{proc.name} not ready on :{port} after {timeout}s"
        await asyncio.sleep(0.1)  # deadline poll while a subprocess comes up


def wait_ready(port: int, timeout: float) -> bool:
    """Poll ``/readyz`` on ``port`` until 200 (True) or the deadline (False); blocking, for
    tests that start a process with ``subprocess``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)  # deadline poll for a subprocess to come up
    return False
