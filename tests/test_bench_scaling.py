"""`bench.scaling` in miniature, on one private stack: 20 waiting, one worker, 20 enrolments."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.scaling import approve_by_waiting, enrolment_by_workers, kb_per_waiting, table
from bench.stack import running_stack


@pytest.mark.timeout(60)
async def test_scaling_bench_measures_every_figure(tmp_path: Path) -> None:
    async with running_stack(tmp_path) as stack:
        by_waiting = await approve_by_waiting(stack, [20], 5, [1], 16)
        by_workers = await enrolment_by_workers(stack, [1], 20, 16)

    level = by_waiting["20"]
    assert level["waiting_instances"] == 20
    approve = level["by_concurrency"]["1"]
    assert approve["approvals"] == 5
    for key in ("approve_p50_ms", "approve_p99_ms", "floor_p50_ms", "floor_p99_ms"):
        assert approve[key] > 0, key
    # 20 waiting, plus 2 x (5 + 10 warm-up) for the two sides' approvals.
    assert level["enrolment"]["enrolled"] == 50
    assert level["enrolment"]["enrol_per_s"] > 0 and level["enrolment"]["gates_per_s"] > 0
    workers = by_workers["1"]
    assert workers["worker_processes"] == 1
    assert workers["enrolled"] == 20
    assert workers["waiting_before"] >= 20
    assert workers["enrol_per_s"] > 0 and workers["gates_per_s"] > 0
    assert set(workers["cpu_ms_per_enrolment"]) == {"dev_server", "worker", "api", "caller"}
    assert workers["cpu_ms_per_enrolment"]["dev_server"] > 0
    assert workers["cpu_ms_per_enrolment"]["worker"] > 0
    summary = {
        "load_average_start": [0.0, 0.0, 0.0],
        "load_average_end": [0.0, 0.0, 0.0],
        "seconds": 1.0,
        "approve_by_waiting": by_waiting,
        "worker_kb_per_waiting": kb_per_waiting(by_waiting),
        "enrolment_by_workers": by_workers,
    }
    assert "20" in table(summary)
