"""Benchmark rows, the target checks and the Markdown report."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Row:
    """One measured target. ``rate`` is requests/s for HTTP targets, msg/s for raw AMQP."""

    name: str
    measures: str
    unit: str = "req/s"
    rate: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    rss_kib: int | None = None
    cpu_us: float | None = None  # the server's CPU per 2xx answer while measured
    non2xx: int | None = None
    ok2xx: int | None = None
    stored: int | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    lost_in_other_rounds: int = 0

    @property
    def rss_mb(self) -> float | None:
        return None if self.rss_kib is None else self.rss_kib * 1024 / 1e6

    @property
    def lost(self) -> int:
        """Confirmed (2xx) requests whose message is not in the sink queue."""
        if self.ok2xx is None or self.stored is None:
            return self.lost_in_other_rounds
        return max(0, self.ok2xx - self.stored) + self.lost_in_other_rounds


# Each measured target's ceiling: the row that does the same broker work with nothing else.
CEILINGS = {
    "gateway": "raw-publish",
    "gateway-workers-2": "raw-publish",
    "reference": "raw-publish",
    "node-peer": "raw-publish",
    "go-peer": "raw-publish",
    "worker-sqlite": "raw-consume",
    "worker-postgres": "raw-consume",
}
WORKER_TARGET = 0.7  # worker-postgres ev/s / raw consume msg/s


@dataclass(frozen=True)
class Check:
    """One target from the brief and whether the run met it."""

    label: str
    value: str
    target: str
    ok: bool | None  # None: could not be computed

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: "n/a"}[self.ok]


def median_round(rounds: list[Row]) -> Row:
    """The round with the median rate, noting every round's rate and any loss or error."""
    good = sorted((r for r in rounds if not r.error), key=lambda r: r.rate or 0.0)
    if not good:
        return rounds[0]
    chosen = good[(len(good) - 1) // 2]
    if len(rounds) > 1:
        rates = ", ".join(_num(r.rate) for r in good)
        chosen.notes.insert(0, f"median of {len(good)} rounds by rate ({rates} {chosen.unit})")
        chosen.lost_in_other_rounds = sum(r.lost for r in good if r is not chosen)
        chosen.notes += [f"a round failed: {r.error}" for r in rounds if r.error]
    return chosen


def _num(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def of_ceiling(row: Row, rows: dict[str, Row]) -> float | None:
    """``row``'s rate over its ceiling's rate in the same run (None if either is missing)."""
    ceiling = rows.get(CEILINGS.get(row.name, ""))
    if row.error or not row.rate or ceiling is None or ceiling.error or not ceiling.rate:
        return None
    return row.rate / ceiling.rate


def peer_checks(rows: dict[str, Row]) -> list[Check]:
    """Issue 13: one ``serve`` at least the Node.js peer's rate with a p99 no worse, at most
    60 µs of CPU per request, and ``serve --workers 2`` 1.3x one process."""
    gateway, node = rows.get("gateway"), rows.get("node-peer")
    if gateway is None or gateway.error or not gateway.rate:
        return []
    out = [
        Check(
            "gateway CPU per request",
            f"{_num(gateway.cpu_us, 0)} µs",
            "≤ 60 µs",
            None if gateway.cpu_us is None else gateway.cpu_us <= 60,
        )
    ]
    if node is not None and not node.error and node.rate:
        vs_node = gateway.rate / node.rate
        out.append(
            Check("gateway rps / Node.js peer rps", _ratio(vs_node, "x"), "≥ 1.0x", vs_node >= 1.0)
        )
        if gateway.p99_ms is not None and node.p99_ms is not None:
            out.append(
                Check(
                    "gateway p99 / Node.js peer p99",
                    f"{gateway.p99_ms:.1f} / {node.p99_ms:.1f} ms",
                    "≤ 1.0",
                    gateway.p99_ms <= node.p99_ms,
                )
            )
    workers = rows.get("gateway-workers-2")
    if workers is not None and not workers.error and workers.rate:
        scale = workers.rate / gateway.rate
        out.append(
            Check("serve --workers 2 / one serve", _ratio(scale, "x"), "≥ 1.3x", scale >= 1.3)
        )
    return out


def checks(rows: dict[str, Row]) -> list[Check]:
    """The targets: the gateway at least 3x the reference, 0.5x raw publish, p99, RSS, no
    loss; the PostgreSQL worker at least 0.5x raw consume (the SQLite one is reported)."""
    gateway = rows.get("gateway")
    reference = rows.get("reference")
    raw = rows.get("raw-publish")
    g_rate = gateway.rate if gateway and not gateway.error else None

    def ratio(other: Row | None) -> float | None:
        if g_rate is None or other is None or other.error or not other.rate:
            return None
        return g_rate / other.rate

    vs_ref, vs_raw = ratio(reference), ratio(raw)
    p99 = gateway.p99_ms if g_rate is not None and gateway else None
    rss = gateway.rss_mb if g_rate is not None and gateway else None
    out = (
        []
        if gateway is None
        else [
            Check(
                "gateway rps / reference rps",
                _ratio(vs_ref, "x"),
                "≥ 3x",
                None if vs_ref is None else vs_ref >= 3,
            ),
            Check(
                "gateway rps / raw publish msg/s",
                _ratio(vs_raw, ""),
                "≥ 0.5",
                None if vs_raw is None else vs_raw >= 0.5,
            ),
            Check(
                "gateway p99 latency",
                f"{_num(p99, 1)} ms",
                "< 60 ms",
                None if p99 is None else p99 < 60,
            ),
            Check(
                "gateway peak RSS",
                f"{_num(rss, 1)} MB",
                "< 120 MB",
                None if rss is None else rss < 120,
            ),
        ]
    )
    out += peer_checks(rows)
    for name in ("worker-postgres", "worker-sqlite"):
        row = rows.get(name)
        if row is None:
            continue
        share = of_ceiling(row, rows)
        target = name == "worker-postgres"
        out.append(
            Check(
                f"{name} ev/s / raw consume msg/s",
                _ratio(share, ""),
                f"≥ {WORKER_TARGET}" if target else "(reported, no target)",
                None if share is None or not target else share >= WORKER_TARGET,
            )
        )
    for name in ("gateway", "reference"):
        row = rows.get(name)
        if row is None or row.error or row.ok2xx is None:
            continue
        out.append(
            Check(
                f"{name}: messages stored ≥ 2xx answers",
                f"{_num(row.stored)} stored / {_num(row.ok2xx)} 2xx",
                "no loss",
                None if row.stored is None else row.lost == 0,
            )
        )
    return out


def _ratio(value: float | None, suffix: str) -> str:
    return "—" if value is None else f"{value:.2f}{suffix}"


def markdown(
    title: str, setup: list[str], sections: dict[str, list[Row]], found: list[Check]
) -> str:
    """The whole report: setup bullets, one table per section, the checks, the notes."""
    by_name = {row.name: row for rows in sections.values() for row in rows}
    lines = [f"# {title}", ""]
    lines += [f"- {item}" for item in setup]
    for section, rows in sections.items():
        lines += ["", f"## {section}", ""]
        lines += [
            "| target | measures | rate | of ceiling | p50 ms | p99 ms | CPU µs/req | peak RSS MB "
            "| non-2xx |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in rows:
            rate = "error" if row.error else f"{_num(row.rate)} {row.unit}"
            share = of_ceiling(row, by_name)
            ceiling = "—" if share is None else f"{share:.2f}x {CEILINGS[row.name]}"
            lines.append(
                f"| {row.name} | {row.measures} | {rate} | {ceiling} | {_num(row.p50_ms, 1)} | "
                f"{_num(row.p99_ms, 1)} | {_num(row.cpu_us, 0)} | {_num(row.rss_mb, 1)} | "
                f"{_num(row.non2xx)} |"
            )
    lines += ["", "## Targets", "", "| check | measured | target | verdict |", "|---|---|---|---|"]
    lines += [f"| {c.label} | {c.value} | {c.target} | {c.verdict} |" for c in found]
    notes = [
        f"- **{row.name}**: {note}"
        for rows in sections.values()
        for row in rows
        for note in ([f"ERROR: {row.error}"] if row.error else []) + row.notes
    ]
    if notes:
        lines += ["", "## Notes", "", *notes]
    return "\n".join(lines) + "\n"
