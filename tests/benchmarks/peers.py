"""The Node.js and Go gateways a team would write instead (issue 13), built for the bench.

Both do the same job as the gateway's hot path, minus normalization: check the bearer
token's SHA-256 digest in constant time, publish the raw body (persistent, confirmed) with
the CloudEvent ``type`` as routing key, answer 204 after the broker's ack. Each is installed by
the bench itself and skipped with a note where that cannot be done:

- Node.js: ``peers/node`` (Fastify 5 + amqplib ``ConfirmChannel``), ``npm install`` on first use;
- Go: ``peers/go`` (net/http + amqp091-go deferred confirms), built with Debian's ``golang-go``
  and ``golang-github-rabbitmq-amqp091-go-dev`` (installed with apt-get when root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "peers" / "node"
GO_DIR = HERE / "peers" / "go"
GO_LIBRARY = Path("/usr/share/gocode/src/github.com/rabbitmq/amqp091-go")


class PeerUnavailable(Exception):
    """The peer cannot be installed or built here; the message says why, on one line."""


def _build(argv: list[str], cwd: Path, what: str, env: dict[str, str] | None = None) -> None:
    """Run one build step (5 min at most); PeerUnavailable with its last line when it fails."""
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise PeerUnavailable(f"{what} failed: {tail[0]}")


def node_argv() -> list[str]:
    """``node server.js`` after ``npm install`` (once)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise PeerUnavailable("node/npm not installed")
    if not (NODE_DIR / "node_modules" / "fastify").is_dir():
        _build([npm, "install", "--no-audit", "--no-fund", "--silent"], NODE_DIR, "npm install")
    return [node, str(NODE_DIR / "server.js")]


def go_argv(build_dir: Path) -> list[str]:
    """The Go peer's binary, built into ``build_dir`` (GOPATH mode on Debian's packages)."""
    if shutil.which("go") is None or not GO_LIBRARY.is_dir():
        _apt_install("golang-go", "golang-github-rabbitmq-amqp091-go-dev")
    go = shutil.which("go")
    if go is None or not GO_LIBRARY.is_dir():
        raise PeerUnavailable("no Go toolchain with amqp091-go (Debian golang-go + amqp091-go-dev)")
    src = build_dir / "go-peer"
    src.mkdir(parents=True, exist_ok=True)
    shutil.copy(GO_DIR / "main.go", src / "main.go")
    binary = build_dir / "go-peer-bin"
    env = {
        **os.environ,
        "GOPATH": "/usr/share/gocode",
        "GO111MODULE": "off",
        "GOFLAGS": "",
        "GOCACHE": str(build_dir / "go-cache"),
    }
    _build([go, "build", "-o", str(binary), "."], src, "go build", env)
    return [str(binary)]


def _apt_install(*packages: str) -> None:
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(
        [apt, "install", "-y", "-q", *packages],
        env=env,
        capture_output=True,
        timeout=600,
        check=False,
    )
