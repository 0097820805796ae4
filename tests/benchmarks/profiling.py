"""Sample a running server with py-spy during the load and summarise where time goes.

Two non-blocking recorders run side by side (they read memory without pausing the target,
so the numbers move less): one writes the flame graph ``gateway.svg``, the other the folded
stacks ``gateway.folded`` (speedscope opens those too), which are summarised as the top
frames by self and by inclusive samples.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_LINE = re.compile(r":\d+\)$")


def py_spy() -> str:
    """The py-spy next to this interpreter, else the one on PATH."""
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy") or "py-spy"


@dataclass
class Recording:
    """Both py-spy recorders attached to one process."""

    svg: Path
    folded: Path
    processes: list[subprocess.Popen[bytes]]

    def stop(self, timeout_s: float = 30.0) -> None:
        """End an open-ended recording (``seconds=None``): SIGINT makes py-spy write its files."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        self.wait(timeout_s)

    def wait(self, timeout_s: float) -> None:
        """Wait for both recorders to write their files (they stop after their duration)."""
        for process in self.processes:
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.terminate()
                process.wait()


def record(pid: int, seconds: float | None, out_dir: Path, name: str, rate: int = 100) -> Recording:
    """Start sampling ``pid`` for ``seconds`` (None: until ``stop``) into
    ``<out_dir>/<name>.svg`` and ``.folded``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    svg, folded = out_dir / f"{name}.svg", out_dir / f"{name}.folded"
    base = [py_spy(), "record", "--pid", str(pid)]
    if seconds is not None:
        base += ["--duration", str(max(1, round(seconds)))]
    base += ["--rate", str(rate), "--nonblocking"]
    log = (out_dir / f"{name}.py-spy.log").open("wb")
    processes = [
        subprocess.Popen([*base, "--format", fmt, "-o", str(path)], stdout=log, stderr=log)
        for fmt, path in (("flamegraph", svg), ("raw", folded))
    ]
    log.close()
    return Recording(svg, folded, processes)


def _frame(frame: str) -> str:
    """``func (path/to/file.py:123)`` → ``func (file.py)``, so lines of one function add up."""
    name, _, where = frame.partition(" (")
    where = _LINE.sub(")", where)
    where = where.split("site-packages/")[-1]
    return f"{name} ({where}" if where else name


def top_frames(folded: Path, limit: int = 15) -> str:
    """A ``py-spy top``-like text: the busiest functions by self and by inclusive samples."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = [_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    if not total:
        return "no samples recorded"
    lines = [
        f"{total} samples (busy time only: idle waits are not sampled); on uvloop, self time "
        "of the loop runner (Runner.run, run_app) is uvloop's C code: socket I/O and "
        "scheduling; on asyncio that work shows as selector_events/base_events frames",
        "",
    ]
    lines += ["self %  function"]
    lines += [f"{100 * n / total:6.1f}  {frame}" for frame, n in own.most_common(limit)]
    lines += ["", "total % function"]
    lines += [f"{100 * n / total:6.1f}  {frame}" for frame, n in inclusive.most_common(limit)]
    return "\n".join(lines)
