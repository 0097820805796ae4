"""Where one request's CPU goes, stage by stage, in µs: a py-spy profile of the gateway under
the benchmark load, each sample given to the stage of its innermost frame that names one,
scaled by the CPU per request the same run measured.

Stages (first rule that matches the innermost-first stack wins):

- ``frame encoding``: ``gateway/amqp_wire.py``, ``gateway/amqp_message.py``
- ``publish + confirm wait``: ``gateway/confirm_stream.py``, ``gateway/publisher.py``
- ``confirm reading``: aiormq's and pamqp's frame reading (``aiormq/``, ``pamqp/``) and the
  raw confirm reader (``gateway/ack_reader.py``)
- ``auth``: ``gateway/auth*.py``, ``standard_webhooks``, ``source_access``, ``rate_limit``,
  ``client_address``
- ``adapter + JSON``: ``gateway/adapters/`` (orjson's C code is inside these frames)
- ``logging``: ``gateway/logs.py``, ``structlog/``
- ``metrics``: ``gateway/metrics.py``
- ``limits``: ``gateway/inflight.py``, ``gateway/connections.py``
- ``handler glue``: the rest of ``gateway/callbacks.py`` and ``gateway/app.py``
- ``routing + middleware``: ``aiohttp/web_app.py``, ``web_urldispatcher.py``,
  ``web_middlewares.py``, ``web_request.py``
- ``HTTP parse``: ``aiohttp/http_parser.py``, ``web_protocol.py`` reading (``data_received``);
  on the fast path ``parse_head``, ``FastRequest`` and ``CallbackProtocol`` reading
- ``HTTP response``: ``aiohttp/http_writer.py``, ``web_response.py``, ``web_protocol.py``; on
  the fast path ``encode_response`` and the write in ``CallbackProtocol._answer``
- ``event loop + socket I/O``: what is left (uvloop's C code shows as its runner's frame).

Usage: ``python stages.py FOLDED CPU_US`` prints the table; ``run.py --profile`` appends it.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("frame encoding", ("gateway/amqp_wire.py", "gateway/amqp_message.py")),
    ("publish + confirm wait", ("gateway/confirm_stream.py", "gateway/publisher.py")),
    ("confirm reading", ("aiormq/", "pamqp/", "gateway/ack_reader.py")),
    (
        "auth",
        (
            "gateway/auth",
            "gateway/standard_webhooks.py",
            "gateway/source_access.py",
            "gateway/rate_limit.py",
            "gateway/client_address.py",
            "gateway/type_patterns.py",
        ),
    ),
    ("adapter + JSON", ("gateway/adapters/", "gateway/cloudevent.py")),
    ("logging", ("gateway/logs.py", "structlog/", "logging/")),
    ("metrics", ("gateway/metrics.py",)),
    ("limits", ("gateway/inflight.py", "gateway/connections.py")),
    ("handler glue", ("gateway/callbacks.py", "gateway/app.py", "gateway/problem.py")),
    (
        "routing + middleware",
        (
            "aiohttp/web_app.py",
            "aiohttp/web_urldispatcher.py",
            "aiohttp/web_middlewares.py",
            "aiohttp/web_request.py",
            "aiohttp/helpers.py",
            "multidict",
            "yarl/",
        ),
    ),
    (
        "HTTP parse",
        (
            "aiohttp/http_parser.py",
            "aiohttp/streams.py",
            "data_received",
            "parse_head (",
            "FastRequest.",
            "CallbackProtocol._next (",
        ),
    ),
    (
        "HTTP response",
        (
            "aiohttp/http_writer.py",
            "aiohttp/web_response.py",
            "aiohttp/web_protocol",
            "encode_response (",
            "http_date (",
            # its own time is writing the answer (uvloop's send shows in the caller's frame)
            "CallbackProtocol._answer (",
        ),
    ),
)
OTHER = "event loop + socket I/O"


def stage_of(stack: list[str]) -> str:
    """The stage of one sampled stack (frames outermost first, as py-spy folds them)."""
    for frame in reversed(stack):
        for stage, needles in RULES:
            if any(needle in frame for needle in needles):
                return stage
    return OTHER


def idle(stack: list[str]) -> bool:
    """A sample of the log flusher thread asleep between flushes: py-spy's ``--nonblocking``
    mode records it as busy, yet it uses no CPU (its flushes are counted as logging)."""
    return stack[-1].startswith(IDLE_FRAME)


IDLE_FRAME = "BufferedBytesLogger._flush_forever ("


def stages(folded: Path) -> Counter[str]:
    """Samples per stage in a py-spy ``--format raw`` (folded) file, idle samples left out."""
    counts: Counter[str] = Counter()
    for line in folded.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            frames = stack.split(";")
            if not idle(frames):
                counts[stage_of(frames)] += int(count)
    return counts


def table(folded: Path, cpu_us: float | None) -> str:
    """Markdown: each stage's share of the samples and, with ``cpu_us``, its µs per request."""
    counts = stages(folded)
    total = sum(counts.values()) or 1
    lines = ["| stage | share | µs per request |", "|---|---:|---:|"]
    order = [stage for stage, _ in RULES] + [OTHER]
    for stage in order:
        share = counts.get(stage, 0) / total
        micro = "—" if cpu_us is None else f"{share * cpu_us:.1f}"
        lines.append(f"| {stage} | {share:.1%} | {micro} |")
    lines.append(
        f"| **total** ({total} samples) | 100% | {'—' if cpu_us is None else f'{cpu_us:.0f}'} |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else None))
