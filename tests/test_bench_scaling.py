"""`python -m bench.scaling` in miniature: 20 waiting, one worker, a batch of 20 enrolments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.scaling import main


@pytest.mark.timeout(60)
def test_scaling_bench_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "scaling.json"
    argv = [
        "--waiting",
        "20",
        "--n",
        "5",
        "--workers",
        "1",
        "--enrol-batch",
        "20",
        "--out",
        str(out),
    ]

    assert main(argv) == 0

    summary = json.loads(out.read_text())
    assert len(summary["load_average_start"]) == len(summary["load_average_end"]) == 3
    level = summary["approve_by_waiting"]["20"]
    assert level["waiting_instances"] == 20
    approve = level["by_concurrency"]["1"]
    for key in ("approve_p50_ms", "approve_p99_ms", "floor_p50_ms", "floor_p99_ms"):
        assert approve[key] > 0, key
    assert approve["approvals"] == 5
    assert level["enrolment"]["enrol_per_s"] > 0
    assert level["enrolment"]["gates_per_s"] > 0
    workers = summary["enrolment_by_workers"]["1"]
    assert workers["worker_processes"] == 1
    assert workers["enrolled"] == 20
    assert workers["enrol_per_s"] > 0 and workers["gates_per_s"] > 0
    assert set(workers["cpu_ms_per_enrolment"]) == {"dev_server", "worker", "api", "caller"}
    assert workers["cpu_ms_per_enrolment"]["worker"] > 0
    assert workers["cpu_ms_per_enrolment"]["dev_server"] > 0
