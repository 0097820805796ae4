"""Start a server under test as a subprocess, wait until it is ready, stop it, read its RSS."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import measure


class ServerError(Exception):
    """The server exited, or did not become ready before its deadline."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without ``GATEWAY_*`` overrides, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(extra or {})
    return env


class Server:
    """One server process: ``with Server(...) as server: ...``; peak RSS read on the way out."""

    def __init__(
        self, name: str, argv: Sequence[str], port: int, log: Path, env: Mapping[str, str]
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.log = log
        self.env = dict(env)
        self.process: subprocess.Popen[bytes] | None = None
        self.rss_kib = 0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> Server:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, env=self.env
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def wait_ready(self, path: str = "/readyz", deadline_s: float = 30.0) -> None:
        """Poll ``GET path`` until 200; ServerError if the process dies or time runs out."""
        assert self.process is not None
        deadline = time.monotonic() + deadline_s
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(
                    f"{self.name} exited with {self.process.returncode}: {self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url(path), timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        return
                    last = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise ServerError(f"{self.name} not ready after {deadline_s:.0f}s ({last})")

    def stop(self, timeout_s: float = 15.0) -> None:
        """Record peak RSS (with children), then SIGINT, then SIGKILL after ``timeout_s``."""
        if self.process is None or self.process.poll() is not None:
            return
        self.rss_kib = measure.tree_vmhwm_kib(self.process.pid)
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of the server's output, on one line."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])
