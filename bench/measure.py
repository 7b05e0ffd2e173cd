"""Shared measuring helpers: percentiles, timed concurrent runs, enrolment to the gate."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Sample:
    """One timed run: each call's latency in milliseconds, and the run's wall-clock seconds."""

    latencies_ms: list[float]
    wall_seconds: float

    @property
    def count(self) -> int:
        """How many calls were timed."""
        return len(self.latencies_ms)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile; exact enough for a few hundred samples and easy to reason about."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


async def run_concurrently(
    items: Sequence[str], concurrency: int, operation: Callable[[str], Awaitable[None]]
) -> Sample:
    """Runs `operation` on every item with `concurrency` callers; times each call and the whole."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    latencies: list[float] = []

    async def caller() -> None:
        while True:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            started = time.perf_counter()
            await operation(item)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return Sample(latencies, time.perf_counter() - started)


def merge(samples: Sequence[Sample]) -> Sample:
    """The samples as one: every latency, and their wall-clock seconds added up (runs taken one
    after the other, so the throughput stays calls over time spent)."""
    return Sample(
        [latency for sample in samples for latency in sample.latencies_ms],
        sum(sample.wall_seconds for sample in samples),
    )


def write_json(path: Path, figures: object) -> None:
    """Writes a bench's figures to `path` as indented JSON (creating its directory), the file
    every bench leaves under `var/bench/`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2) + "\n")
