"""``/metrics`` under ``serve --workers N``: every process's numbers, whichever one is scraped.

A scrape reaches one process of N. Each process writes a snapshot of its own registry to the
supervisor's directory once a second (write, then rename: readers never see half a file);
the scraped process renders its own live numbers plus the others' snapshots, each sample
labelled ``process="<slot>"``. Sum over ``process`` in queries; a sibling's numbers are at
most ``INTERVAL_S`` old. A single ``serve`` does none of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

INTERVAL_S = 1.0
LABEL = "process"


class SiblingMetrics(Collector):
    """Renders one process's registry merged with its siblings' snapshots."""

    def __init__(self, registry: CollectorRegistry, directory: Path, slot: int) -> None:
        self._registry = registry
        self._directory = directory
        self._slot = slot
        self._path = directory / f"{slot}.json"
        self._merged = CollectorRegistry(auto_describe=False)
        self._merged.register(self)

    def render(self) -> bytes:
        return generate_latest(self._merged)

    def snapshot(self) -> None:
        """Write this process's numbers for the others to read."""
        temporary = self._path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_bytes(orjson.dumps(_families(self._registry)))
        temporary.replace(self._path)

    async def publish_until(self, stop: asyncio.Event) -> None:
        """Write a snapshot every ``INTERVAL_S`` until ``stop`` is set."""
        while not stop.is_set():
            await asyncio.to_thread(self.snapshot)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), INTERVAL_S)

    def collect(self) -> Iterator[Metric]:
        by_slot: dict[str, list[dict[str, object]]] = {str(self._slot): _families(self._registry)}
        for path in sorted(self._directory.glob("*.json")):
            if path.stem == str(self._slot):
                continue
            with contextlib.suppress(OSError, orjson.JSONDecodeError):
                by_slot[path.stem] = orjson.loads(path.read_bytes())
        merged: dict[str, Metric] = {}
        for slot, families in by_slot.items():
            for family in families:
                name = str(family["name"])
                metric = merged.get(name)
                if metric is None:
                    metric = merged[name] = Metric(
                        name, str(family["documentation"]), str(family["type"])
                    )
                for sample_name, labels, value in family["samples"]:  # type: ignore[attr-defined]
                    metric.add_sample(sample_name, {**labels, LABEL: slot}, value)
        yield from merged.values()


def _families(registry: CollectorRegistry) -> list[dict[str, object]]:
    return [
        {
            "name": family.name,
            "documentation": family.documentation,
            "type": family.type,
            "samples": [(s.name, s.labels, s.value) for s in family.samples],
        }
        for family in registry.collect()
    ]
