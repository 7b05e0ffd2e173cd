"""`python -m bench.server_settings`: what each dev-server dynamic-config setting moves.

For each variant an in-memory dev server starts with that dynamic config, and a bare SDK worker
(this process) runs a trivial workflow: one signal handler, one query, one 100 ms timer. Measured,
sequentially, each on a fresh workflow, back to back:

- `signal_query_ms`: signal, then query (our approve's shape: the query waits for its task);
- `update_ms`: one workflow update (for comparison);
- `timer_ms`: start → result of a workflow that sleeps 100 ms (timer queue dispatch), minus 100;
- `visibility_ms`: start → the workflow counted by a visibility query (list-after-write lag);
- `idle_cpu_ms_per_s`: the server's CPU per second while nothing happens (the cost of polling).

Prints a table and writes `var/bench/server_settings.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from bench.measure import percentile, write_json
from bench.stack import cpu_seconds
from entrypoints.devserver import DevServer
from workflows.search_attributes import HAS_PENDING_APPROVAL

TRANSFER = ("history.transferProcessorMaxPollRPS", "1000")
EAGER = ("system.enableActivityEagerExecution", "true")
# The CLI forces a search-attribute cache refresh on every read unless the key is given.
SA_CACHE = ("system.forceSearchAttributesCacheRefreshOnRead", "false")
VARIANTS: dict[str, tuple[tuple[str, str], ...]] = {
    "server default": (),
    "transfer 1000": (TRANSFER,),
    "transfer + timer 1000": (TRANSFER, ("history.timerProcessorMaxPollRPS", "1000")),
    "transfer + visibility 1000": (TRANSFER, ("history.visibilityProcessorMaxPollRPS", "1000")),
    "transfer + 1 task-queue partition": (
        TRANSFER,
        ("matching.numTaskqueueReadPartitions", "1"),
        ("matching.numTaskqueueWritePartitions", "1"),
    ),
    "transfer + forwarder 1000": (TRANSFER, ("matching.forwarderMaxRatePerSecond", "1000")),
    "transfer + eager activities": (TRANSFER, EAGER),
    "transfer + SA cache kept": (TRANSFER, SA_CACHE),
    "transfer + eager + SA cache": (TRANSFER, EAGER, SA_CACHE),
}


@workflow.defn(name="SettingsProbe")
class Probe:
    """Waits for `done`; answers `seen`; `bump` is an update. With `sleep`, sleeps 100 ms."""

    def __init__(self) -> None:
        self._signals = 0
        self._done = False

    @workflow.run
    async def run(self, sleep: bool) -> int:
        """Returns the number of signals seen."""
        if sleep:
            await workflow.sleep(0.1)
            return 0
        await workflow.wait_condition(lambda: self._done)
        return self._signals

    @workflow.signal
    def poke(self) -> None:
        """Counts a signal."""
        self._signals += 1

    @workflow.signal
    def done(self) -> None:
        """Ends the run."""
        self._done = True

    @workflow.query
    def seen(self) -> int:
        """Signals seen so far."""
        return self._signals

    @workflow.update
    def bump(self) -> int:
        """Counts and answers."""
        self._signals += 1
        return self._signals


@activity.defn(name="ProbeDeliver")
async def probe_deliver() -> str:
    """Stands in for the delivery: does nothing, at once."""
    return "sent"


@workflow.defn(name="ApproveProbe")
class ApproveProbe:
    """Waits at a gate (`HasPendingApproval` true); on `approve`, unsets it and runs one
    activity, as an approval's workflow task does; `approved` is the query after it."""

    def __init__(self) -> None:
        self._approved = False

    @workflow.run
    async def run(self) -> str:
        """Returns the activity's result."""
        workflow.upsert_search_attributes([HAS_PENDING_APPROVAL.value_set(True)])
        await workflow.wait_condition(lambda: self._approved)
        workflow.upsert_search_attributes([HAS_PENDING_APPROVAL.value_set(False)])
        result: str = await workflow.execute_activity(
            probe_deliver, start_to_close_timeout=timedelta(seconds=30)
        )
        return result

    @workflow.signal
    def approve(self) -> None:
        """Opens the gate."""
        self._approved = True

    @workflow.query
    def approved(self) -> bool:
        """Whether the gate has opened."""
        return self._approved


async def measure(variant: tuple[tuple[str, str], ...], calls: int) -> dict[str, Any]:
    """Every figure of one variant on its own fresh server."""
    server = DevServer(dynamic_config=variant)
    await server.start()
    try:
        client = await Client.connect(server.address)
        queue = f"probe-{uuid.uuid4()}"
        # The server is measured, not the SDK's sandbox.
        runner = UnsandboxedWorkflowRunner()
        async with Worker(
            client,
            task_queue=queue,
            workflows=[Probe, ApproveProbe],
            activities=[probe_deliver],
            workflow_runner=runner,
        ):
            handles = [
                await client.start_workflow(
                    Probe.run, False, id=f"p-{uuid.uuid4()}", task_queue=queue
                )
                for _ in range(2 * calls)
            ]
            for handle in handles:  # every workflow has run its first task
                await handle.query(Probe.seen)
            signal_query: list[float] = []
            for handle in handles[:calls]:
                started = time.perf_counter()
                await handle.signal(Probe.poke)
                await handle.query(Probe.seen)
                signal_query.append((time.perf_counter() - started) * 1000)
            update: list[float] = []
            for handle in handles[calls:]:
                started = time.perf_counter()
                await handle.execute_update(Probe.bump)
                update.append((time.perf_counter() - started) * 1000)
            timer: list[float] = []
            for _ in range(calls // 3):
                started = time.perf_counter()
                await client.execute_workflow(
                    Probe.run, True, id=f"t-{uuid.uuid4()}", task_queue=queue
                )
                timer.append((time.perf_counter() - started) * 1000 - 100)
            visibility: list[float] = []
            for _ in range(calls // 3):
                workflow_id = f"v-{uuid.uuid4()}"
                started = time.perf_counter()
                await client.start_workflow(Probe.run, True, id=workflow_id, task_queue=queue)
                while not (await client.count_workflows(f"WorkflowId = '{workflow_id}'")).count:  # noqa: ASYNC110
                    await asyncio.sleep(0.002)
                visibility.append((time.perf_counter() - started) * 1000)
            for handle in handles:
                await handle.signal(Probe.done)
            gates = [
                await client.start_workflow(
                    ApproveProbe.run, id=f"a-{uuid.uuid4()}", task_queue=queue
                )
                for _ in range(calls)
            ]
            for gate in gates:  # every one waits at its gate
                await gate.query(ApproveProbe.approved)
            await asyncio.sleep(1)
            assert server.pid is not None
            approve: list[float] = []
            cpu_before = cpu_seconds(server.pid)
            for gate in gates:
                started = time.perf_counter()
                await gate.signal(ApproveProbe.approve)
                await gate.query(ApproveProbe.approved)
                approve.append((time.perf_counter() - started) * 1000)
                await gate.result()
            approve_cpu = (cpu_seconds(server.pid) - cpu_before) / calls
        await asyncio.sleep(2)
        assert server.pid is not None
        before, started = cpu_seconds(server.pid), time.perf_counter()
        await asyncio.sleep(5)
        idle = (cpu_seconds(server.pid) - before) / (time.perf_counter() - started)
    finally:
        await server.stop()
    return {
        "signal_query_ms": percentile(signal_query, 50),
        "signal_query_p99_ms": percentile(signal_query, 99),
        "update_ms": percentile(update, 50),
        "timer_ms": percentile(timer, 50),
        "visibility_ms": percentile(visibility, 50),
        "idle_cpu_ms_per_s": idle * 1000,
        "approve_ms": percentile(approve, 50),
        "approve_cpu_ms": approve_cpu * 1000,
    }


async def run(calls: int, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Measures every variant (or those `names`) in turn, `calls` calls each; its figures by
    variant name, each also printed to stderr as it is done."""
    results: dict[str, dict[str, Any]] = {}
    for name, variant in VARIANTS.items():
        if names is not None and name not in names:
            continue
        results[name] = await measure(variant, calls)
        print(name, json.dumps(results[name]), file=sys.stderr)
    return results


def main(argv: list[str] | None = None) -> int:
    """Runs every variant and prints the p50 table."""
    parser = argparse.ArgumentParser(prog="python -m bench.server_settings", description=__doc__)
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path("var/bench/server_settings.json"))
    parser.add_argument("--variants", default="", help="comma-separated names (default all)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.variants.split(",") if n.strip()] or None
    unknown = sorted(set(names or ()) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {sorted(VARIANTS)}")
    results = asyncio.run(run(args.calls, names))
    print(
        f"{'variant':<36} {'sig+query':>9} {'p99':>7} {'update':>7} {'timer+':>7} "
        f"{'visib.':>7} {'idle CPU':>9} {'approve':>8} {'its CPU':>8}"
    )
    for name, r in results.items():
        print(
            f"{name:<36} {r['signal_query_ms']:>9.1f} {r['signal_query_p99_ms']:>7.1f} "
            f"{r['update_ms']:>7.1f} {r['timer_ms']:>7.1f} {r['visibility_ms']:>7.1f} "
            f"{r['idle_cpu_ms_per_s']:>7.1f}ms {r['approve_ms']:>8.1f} "
            f"{r['approve_cpu_ms']:>6.1f}ms"
        )
    write_json(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
