"""`python -m bench.replay_cost`: the worker's CPU to replay recorded histories, sandboxed and not.

What a worker spends on a workflow instance that is not in its sticky cache (an approval among
more waiting instances than the cache holds, a worker restart) is a replay of its history; what
it spends on each new workflow task of a cached one is the same machinery on one more
activation. This measures both runners on the same histories in one process, with no server:
Temporal's `Replayer` with the `SandboxedWorkflowRunner` (the SDK's default) and with the
`UnsandboxedWorkflowRunner`, alternating `--rounds` times, each round replaying every history
once; CPU is this process's (`time.process_time`), so other processes on the machine cost it
little. Per runner: CPU ms per history replayed and per workflow task in them (median of the
rounds, with min and max), and the peak memory a round of replays allocated (`tracemalloc`, KB;
an untimed round of its own).

The histories are the replay suite's (`tests/histories/<release>/*.json`, `CampaignWorkflow`
only), encrypted under the test suite's public keys: run it with those keys, e.g.
`CAMPAIGN_ENGINE_PAYLOAD_KEYS=test-1:<TEST_KEY of tests/keys.py> python -m bench.replay_cost`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from bench.measure import write_json
from campaign_engine.codec import data_converter
from campaign_engine.settings import Settings
from workflows.campaign import CampaignWorkflow

HISTORIES = Path(__file__).resolve().parent.parent / "tests" / "histories"


def campaign_histories(release: str | None) -> list[WorkflowHistory]:
    """The recorded `CampaignWorkflow` histories of `release` (a folder name), else of every
    release folder."""
    folders = sorted(p for p in HISTORIES.iterdir() if p.is_dir() and p.name[0].isdigit())
    found = []
    for path in sorted(
        path
        for folder in folders
        if release in (None, folder.name)
        for path in folder.glob("*.json")
    ):
        text = path.read_text()
        if '"CampaignWorkflow"' in text:
            found.append(WorkflowHistory.from_json(f"bench-{path.stem}", text))
    return found


def workflow_tasks(history: WorkflowHistory) -> int:
    """Workflow tasks completed in the history (each is one activation replayed)."""
    return sum(1 for e in history.events if e.HasField("workflow_task_completed_event_attributes"))


async def one_round(replayer: Replayer, histories: list[WorkflowHistory]) -> float:
    """Replays each history once; the CPU seconds it took."""
    started = time.process_time()
    for history in histories:
        await replayer.replay_workflow(history)
    return time.process_time() - started


async def peak_kb(replayer: Replayer, histories: list[WorkflowHistory]) -> float:
    """Replays each history once under `tracemalloc` (which slows it: not timed); the peak KB
    allocated meanwhile."""
    tracemalloc.start()
    for history in histories:
        await replayer.replay_workflow(history)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 1024


async def run(rounds: int, release: str | None) -> dict[str, Any]:
    """Both runners, alternating; the summary `main` prints and writes."""
    histories = campaign_histories(release)
    tasks = sum(workflow_tasks(h) for h in histories)
    converter = data_converter(Settings())
    runners: dict[str, WorkflowRunner] = {
        "sandboxed": SandboxedWorkflowRunner(),
        "unsandboxed": UnsandboxedWorkflowRunner(),
    }
    replayers = {
        name: Replayer(workflows=[CampaignWorkflow], data_converter=converter, workflow_runner=r)
        for name, r in runners.items()
    }
    for replayer in replayers.values():  # warm-up: imports, the sandbox's first module load
        await one_round(replayer, histories)
    cpu: dict[str, list[float]] = {name: [] for name in runners}
    for index in range(rounds):
        order = list(replayers) if index % 2 == 0 else list(reversed(replayers))
        for name in order:
            cpu[name].append(await one_round(replayers[name], histories))
    memory = {name: await peak_kb(replayer, histories) for name, replayer in replayers.items()}
    summary: dict[str, Any] = {"histories": len(histories), "workflow_tasks": tasks}
    for name in runners:
        per_history = [s * 1000 / len(histories) for s in cpu[name]]
        summary[name] = {
            "cpu_ms_per_history": statistics.median(per_history),
            "cpu_ms_per_history_min": min(per_history),
            "cpu_ms_per_history_max": max(per_history),
            "cpu_ms_per_workflow_task": statistics.median(cpu[name]) * 1000 / tasks,
            "peak_kb_allocated": memory[name],
        }
    return summary


def main(argv: list[str] | None = None) -> int:
    """Prints and writes (`--out`) the figures of both runners."""
    parser = argparse.ArgumentParser(prog="python -m bench.replay_cost", description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--release", default=None, help="one tests/histories folder (all)")
    parser.add_argument("--out", type=Path, default=Path("var/bench/replay_cost.json"))
    args = parser.parse_args(argv)
    summary = asyncio.run(run(args.rounds, args.release))
    print(json.dumps(summary, indent=2))
    write_json(args.out, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
