"""`python -m bench.cached_memory`: the SDK's own memory per cached workflow, without our code.

The floor under `bench.scaling`'s `worker_kb_per_waiting`: an in-memory dev server and a bare SDK
worker in a subprocess (unsandboxed, cache large enough for all) run a trivial workflow that
waits for a signal with a 7-day timeout, the shape of an instance at its gate. Workflows are
started in steps (`--steps`, cumulative); after each step, once every started workflow has
answered a query (so each is in the worker's cache), the worker's RSS is read from `/proc`.
The slope between the first and last step is KB per cached workflow: what any Python worker of
this SDK pays per waiting instance, whatever the workflow does.

Prints a table and writes `var/bench/cached_memory.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from entrypoints.devserver import DevServer

CONCURRENCY = 64


@workflow.defn(name="CachedProbe")
class CachedProbe:
    """Waits for `done` up to 7 days; answers `seen`."""

    def __init__(self) -> None:
        self._done = False

    @workflow.run
    async def run(self) -> None:
        """Waits like an instance at its gate."""
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(lambda: self._done, timeout=timedelta(days=7))

    @workflow.signal
    def done(self) -> None:
        """Ends the wait."""
        self._done = True

    @workflow.query
    def seen(self) -> bool:
        """Whether `done` came."""
        return self._done


async def _serve(address: str, task_queue: str) -> None:
    client = await Client.connect(address)
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[CachedProbe],
        workflow_runner=UnsandboxedWorkflowRunner(),
        max_cached_workflows=100_000,
    )
    await worker.run()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


async def measure(steps: list[int]) -> dict[str, Any]:
    """RSS (MB) of the worker after each cumulative step of started workflows."""
    server = DevServer()
    await server.start()
    task_queue = f"cached-{uuid.uuid4()}"
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.cached_memory",
        "--serve",
        server.address,
        task_queue,
        env={**os.environ},
    )
    try:
        client = await Client.connect(server.address)
        started: list[str] = []
        by_count: dict[str, float] = {}
        semaphore = asyncio.Semaphore(CONCURRENCY)

        async def start_and_query(workflow_id: str) -> None:
            async with semaphore:
                # By name: mypy (1.x) resolves the SDK's typed overloads elsewhere in the
                # project wrongly once this module's typed calls are checked first.
                handle = await client.start_workflow(
                    "CachedProbe", id=workflow_id, task_queue=task_queue
                )
                await handle.query("seen")

        for target in steps:
            ids = [f"cached-{i}" for i in range(len(started), target)]
            await asyncio.gather(*(start_and_query(i) for i in ids))
            started.extend(ids)
            await asyncio.sleep(3)
            by_count[str(target)] = round(_rss_mb(worker.pid), 1)
            print(f"{target:>7} cached: worker RSS {by_count[str(target)]:.1f} MB", flush=True)
        first, last = steps[0], steps[-1]
        slope = (by_count[str(last)] - by_count[str(first)]) * 1024 / (last - first)
        return {"rss_mb_by_cached": by_count, "kb_per_cached_workflow": round(slope, 1)}
    finally:
        worker.terminate()
        await worker.wait()
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    """Runs the measurement (or, with `--serve ADDRESS TASK_QUEUE`, the worker it measures)."""
    parser = argparse.ArgumentParser(prog="python -m bench.cached_memory")
    parser.add_argument("--steps", default="1000,5000,10000", help="cumulative workflows started")
    parser.add_argument(
        "--serve", nargs=2, metavar=("ADDRESS", "TASK_QUEUE"), help=argparse.SUPPRESS
    )
    parser.add_argument("--out", type=Path, default=Path("var/bench/cached_memory.json"))
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(*args.serve))
        return 0
    result = asyncio.run(measure([int(s) for s in args.steps.split(",")]))
    print(f"SDK floor: {result['kb_per_cached_workflow']:.1f} KB per cached workflow")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
