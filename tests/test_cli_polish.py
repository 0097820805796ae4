"""The CLI's face: --version, a description for every subcommand, --log-level, the package's
typing marker and licence metadata."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

import consumers
import gateway
from gateway.cli import LOG_LEVELS, build_parser
from tests.broker import AMQP_URL, delete_everything, unique_prefix
from tests.processes import wait_ready
from tests.tcp_proxy import free_port

CLI = [sys.executable, "-m", "gateway.cli"]
ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, check=False, env=os.environ
    )


def subcommands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (sub)command parser, nested ones included, with the words that reach it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield (*path, name), child
                yield from subcommands(child, (*path, name))


def test_version_prints_the_package_version() -> None:
    """`event-gateway --version` prints the installed release and exits 0."""
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"event-gateway {gateway.__version__}"
    assert metadata.version("event-gateway") == gateway.__version__


def test_every_subcommand_has_a_description() -> None:
    """Each subcommand's --help starts with a sentence saying what it does."""
    found = list(subcommands(build_parser()))
    names = {path[0] for path, _ in found}
    assert names >= {"serve", "run", "topology", "hash-token", "consume", "state", "dlq"}
    for path, parser in found:
        assert parser.description, f"`event-gateway {' '.join(path)} --help` has no description"
        assert parser.description.rstrip().endswith("."), path


def test_top_level_help_lists_every_command_with_a_summary() -> None:
    """`event-gateway --help` names every command with a one-line summary."""
    result = run_cli("--help")
    assert result.returncode == 0
    for path, _ in subcommands(build_parser()):
        if len(path) == 1:
            line = next(
                line for line in result.stdout.splitlines() if line.split()[:1] == [path[0]]
            )
            assert len(line.split()) > 1, f"{path[0]} has no summary in --help"


@pytest.mark.parametrize("position", ["before", "after"])
def test_log_level_is_accepted_before_and_after_the_command(position: str) -> None:
    """--log-level works as a global option and as a subcommand option."""
    parser = build_parser()
    argv = (
        ["--log-level", "debug", "hash-token"]
        if position == "before"
        else ["hash-token", "--log-level", "debug"]
    )
    assert parser.parse_args(argv).log_level == "debug"
    assert not hasattr(parser.parse_args(["hash-token"]), "log_level")


@pytest.mark.parametrize(("level", "info_shown"), [("info", True), ("warning", False)])
def test_log_level_filters_the_log_lines(tmp_path: Path, level: str, info_shown: bool) -> None:
    """`serve --log-level warning` prints its warnings but none of its info lines."""
    prefix, port = unique_prefix(), free_port()
    config = tmp_path / "g.toml"
    config.write_text(
        f'[http]\nhost = "127.0.0.1"\nport = {port}\n[amqp]\nurl = "{AMQP_URL}"\n'
        f'exchange = "{prefix}"\n[[sources]]\nname = "x"\nadapter = "cloudevents"\n'
        "tokens = []\n",
        encoding="utf-8",
    )
    process = subprocess.Popen(
        [*CLI, "--log-level", level, "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_ready(port, 20), "serve never became ready"
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
        asyncio.run(delete_everything(prefix))
    levels = [json.loads(line)["level"] for line in stdout.splitlines()]
    assert "warning" in levels, stdout + stderr  # "source has no tokens configured"
    assert ("info" in levels) is info_shown, stdout


def test_a_bad_log_level_is_a_usage_error() -> None:
    """An unknown --log-level is one line on stderr and exit 2."""
    result = run_cli("--log-level", "loud", "hash-token")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--log-level" in result.stderr
    assert LOG_LEVELS == ("debug", "info", "warning", "error")


def test_packages_are_typed_and_licensed() -> None:
    """Both packages ship py.typed; the distribution declares an SPDX licence with its file."""
    for package in (gateway, consumers):
        assert package.__file__ is not None
        assert (Path(package.__file__).parent / "py.typed").exists(), package.__name__
    meta = metadata.metadata("event-gateway")
    assert meta["License-Expression"] == "Apache-2.0"
    assert "Apache License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
