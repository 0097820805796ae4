"""Small measuring helpers shared by the benchmark scripts: percentiles, peak RSS, results."""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import uvloop

RESULT_MARK = "BENCH_JSON "
T = TypeVar("T")


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile of already sorted values (0.0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def vmhwm_kib(pid: int | str = "self") -> int:
    """Peak resident set size (``VmHWM``) of one process in KiB; 0 if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int | str = "self") -> float:
    """User plus system CPU time one process has used so far, in seconds; 0.0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()  # after "pid (comm)": state is fields[0]
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children, their children, ...)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").glob("*/children"):
            try:
                children = [int(c) for c in task.read_text().split()]
            except OSError:
                continue
            found.extend(children)
            pending.extend(children)
    return found


def tree_vmhwm_kib(pid: int) -> int:
    """Peak RSS of ``pid`` plus that of each of its descendants, in KiB."""
    return vmhwm_kib(pid) + sum(vmhwm_kib(child) for child in descendants(pid))


def run_on(loop_name: str, coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on ``uvloop`` or the stock ``asyncio`` loop."""
    if loop_name == "uvloop":
        return uvloop.run(coro)
    return asyncio.run(coro)


def emit(result: dict[str, Any]) -> None:
    """Print the machine-readable result line the orchestrator parses."""
    print(RESULT_MARK + json.dumps(result), flush=True)


def parse_result(output: str) -> dict[str, Any]:
    """The last result line in a script's output; ValueError when there is none."""
    for line in reversed(output.splitlines()):
        if line.startswith(RESULT_MARK):
            parsed: dict[str, Any] = json.loads(line.removeprefix(RESULT_MARK))
            return parsed
    raise ValueError("no result line in output")
