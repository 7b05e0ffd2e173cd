"""`make bench`: the approve endpoint against the bare SDK floor, on one private stack.

python -m bench [--n 300] [--concurrency 1,16] [--waiting 1000] [--out var/bench/latest.json]
                [--no-encryption] [--bulk-leads 3000]

Last, `--bulk-leads` leads go through the batch endpoint, 1,000 per request (`bench.bulk_enrol`:
`bulk_enrol_per_s`, `gates_per_s`). A quick check of everything:
python -m bench --n 20 --concurrency 1 --waiting 50 --bulk-leads 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from temporalio.client import Client

from api.instances import WorkflowInstances
from bench import bulk_enrol
from bench.measure import Sample, merge, percentile, run_concurrently, write_json
from bench.stack import (
    ONE_GATE_CAMPAIGN,
    Stack,
    cpu_seconds,
    peak_rss_mb,
    running_stack,
    server_config,
)
from campaign_engine.ids import new_object_id, workflow_id_for
from workflows.campaign import CampaignWorkflow
from workflows.types import (
    ApprovalOutcomeRequest,
    ApproveRequest,
    CampaignSnapshot,
    CampaignStep,
    Lead,
)

WARM_UP = 10


def arguments(argv: list[str] | None) -> argparse.Namespace:
    """The command line of `python -m bench` (see the module docstring); `argv` None reads
    `sys.argv[1:]`."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--n", type=int, default=300, help="approvals per side per concurrency")
    parser.add_argument(
        "--concurrency",
        default="1,16,64",
        help="comma-separated concurrent callers (default 1,16,64)",
    )
    parser.add_argument(
        "--waiting", type=int, default=1000, help="instances left waiting at gates for RSS"
    )
    parser.add_argument("--enrol-concurrency", type=int, default=16)
    parser.add_argument(
        "--round", type=int, default=0, help="approvals per side per alternation (default 4 x C)"
    )
    parser.add_argument("--out", type=Path, default=Path("var/bench/latest.json"))
    parser.add_argument(
        "--bulk-leads",
        type=int,
        default=bulk_enrol.DEFAULT_LEADS,
        help="leads through the batch endpoint, 1,000 per request (0: none)",
    )
    parser.add_argument(
        "--server-config",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="dev-server dynamic config over entrypoints.devserver.DYNAMIC_CONFIG (repeatable), "
        "e.g. system.enableActivityEagerExecution=false to measure a setting off",
    )
    parser.add_argument(
        "--no-encryption",
        action="store_true",
        help="payloads in clear (CAMPAIGN_ENGINE_PAYLOAD_ENCRYPTION=false), to measure the codec",
    )
    parser.add_argument(
        "--profile-api",
        type=Path,
        default=None,
        metavar="FILE",
        help="py-spy record the API process during the approvals (collapsed stacks to FILE)",
    )
    parser.add_argument(
        "--profile-worker",
        type=Path,
        default=None,
        metavar="FILE",
        help="py-spy record the (first) worker process during the approvals",
    )
    return parser.parse_args(argv)


async def enrol_via_api(stack: Stack, count: int, concurrency: int) -> tuple[list[str], float]:
    """Enrols `count` leads through `POST …/workflow-instances`, `concurrency` at a time.

    Returns the new instance ids and the enrolments per second.
    """
    ids: list[str] = []

    async def one(_: str) -> None:
        ids.append(await stack.enrol())

    sample = await run_concurrently([""] * count, concurrency, one)
    return ids, count / sample.wall_seconds


async def enrol_via_sdk(stack: Stack, count: int, concurrency: int) -> float:
    """The API's own start call (`WorkflowInstances.enrol`) in-process, without HTTP or auth."""
    instances = WorkflowInstances(stack.temporal, stack.settings.task_queue, 30.0)
    step = ONE_GATE_CAMPAIGN["steps"][0]
    snapshot = CampaignSnapshot(
        name=ONE_GATE_CAMPAIGN["name"],
        steps=[
            CampaignStep(
                id=step["id"],
                subject=step["subject"],
                body=step["body"],
                requires_approval=True,
                delay_seconds=0,
            )
        ],
        approval_timeout_seconds=7 * 24 * 3600,
        webhook_url=None,
    )

    async def one(_: str) -> None:
        lead = Lead(new_object_id(), "ada@example.com", "Ada", "Lovelace", "Analytical Engines")
        await instances.enrol(stack.account_group_id, stack.campaign_id, lead, snapshot)

    sample = await run_concurrently([""] * count, concurrency, one)
    return count / sample.wall_seconds


async def wait_for_count(
    stack: Stack, query: str, count: int, within: float, poll: float = 0.5
) -> float:
    """Polls visibility every `poll` s until `query` counts at least `count` workflows; returns
    the seconds it took. Raises TimeoutError after `within` seconds. Visibility trails the
    instances by up to about a second."""
    started = time.monotonic()
    deadline = started + within
    while (await stack.temporal.count_workflows(query)).count < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {count} workflows matched {query!r} in {within} s")
        await asyncio.sleep(poll)
    return time.monotonic() - started


async def wait_at_gates(stack: Stack, count: int, within: float) -> None:
    """Waits (`wait_for_count`) until `count` instances of the campaign have a pending approval;
    TimeoutError after `within` seconds."""
    query = f"HasPendingApproval = true AND CampaignId = '{stack.campaign_id}'"
    await wait_for_count(stack, query, count, within)


def approve_over_http(stack: Stack) -> Any:
    """An `approve(instance_id)` coroutine function that POSTs `…/approve`; it raises RuntimeError
    on any status but 200."""

    async def approve(instance_id: str) -> None:
        response = await stack.http.post(
            f"{stack.campaign_url}/workflow-instances/{instance_id}/approve", headers=stack.auth
        )
        if response.status_code != 200:
            raise RuntimeError(f"approve answered {response.status_code}: {response.text}")

    return approve


def approve_with_sdk(stack: Stack, client: Client) -> Any:
    """The floor: the same signal and query the API sends, from a plain SDK client."""

    async def approve(instance_id: str) -> None:
        handle = client.get_workflow_handle(
            workflow_id_for(stack.account_group_id, stack.campaign_id, instance_id)
        )
        request_id = uuid.uuid4().hex
        await handle.signal(
            CampaignWorkflow.approve, ApproveRequest(request_id=request_id, decided_by="bench")
        )
        outcome = await handle.query(
            CampaignWorkflow.approval_outcome, ApprovalOutcomeRequest(request_id)
        )
        if not outcome.applied:
            raise RuntimeError(f"floor approval not applied: {outcome}")

    return approve


# After each round the stack finishes what the round started (deliveries, completions) before the
# next round is timed; its CPU counts for the round that caused it, its wall time for no one.
SETTLE_SECONDS = 0.3
HEADLINE_CONCURRENCY = 16
HISTORY_SAMPLE = 8


def stack_pids(stack: Stack) -> dict[str, list[int]]:
    """Every process of the stack by role; the caller is this process (HTTP or SDK client)."""
    return {
        "dev_server": [stack.server.pid] if stack.server.pid else [],
        "worker": [worker.pid for worker in stack.workers],
        "api": [stack.api.pid],
        "caller": [os.getpid()],
    }


def cpu_by_process(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each role's processes, summed per role."""
    return {name: sum(cpu_seconds(pid) for pid in ids) for name, ids in pids.items()}


async def history_per_approval(stack: Stack, instance_ids: list[str]) -> dict[str, float]:
    """History events and workflow tasks from the approve signal to the instance's end, averaged
    over a sample of approved instances (each waits for its delivery to finish first)."""
    events = tasks = 0
    sample = instance_ids[:HISTORY_SAMPLE]
    for instance_id in sample:
        handle = stack.temporal.get_workflow_handle(
            workflow_id_for(stack.account_group_id, stack.campaign_id, instance_id)
        )
        await asyncio.wait_for(handle.result(), 60)
        history = (await handle.fetch_history()).events
        signalled = next(
            index
            for index, event in enumerate(history)
            if event.HasField("workflow_execution_signaled_event_attributes")
            and event.workflow_execution_signaled_event_attributes.signal_name == "approve"
        )
        after = history[signalled:]
        events += len(after)
        tasks += sum(e.HasField("workflow_task_completed_event_attributes") for e in after)
    return {
        "history_events_per_approval": events / len(sample),
        "workflow_tasks_per_approval": tasks / len(sample),
    }


async def compare(
    stack: Stack, api_ids: list[str], floor_ids: list[str], concurrency: int, round_size: int
) -> dict[str, Any]:
    """Alternates rounds of (a) and (b), swapping which goes first, so noise hits both.

    CPU is read per process (`/proc/<pid>/stat`) around each round plus its settling time and
    charged to the side that ran the round.
    """
    via_api, via_sdk = approve_over_http(stack), approve_with_sdk(stack, stack.temporal)
    await run_concurrently(api_ids[:WARM_UP], min(concurrency, WARM_UP), via_api)
    await run_concurrently(floor_ids[:WARM_UP], min(concurrency, WARM_UP), via_sdk)
    await asyncio.sleep(SETTLE_SECONDS)
    api_ids, floor_ids = api_ids[WARM_UP:], floor_ids[WARM_UP:]
    pids = stack_pids(stack)
    api_samples: list[Sample] = []
    floor_samples: list[Sample] = []
    cpu: dict[str, dict[str, float]] = {side: dict.fromkeys(pids, 0.0) for side in ("api", "floor")}
    windows = {"api": 0.0, "floor": 0.0}

    async def timed(side: str, ids: list[str], operation: Any) -> Sample:
        before = cpu_by_process(pids)
        started = time.perf_counter()
        sample = await run_concurrently(ids, concurrency, operation)
        await asyncio.sleep(SETTLE_SECONDS)
        windows[side] += time.perf_counter() - started
        after = cpu_by_process(pids)
        for name in pids:
            cpu[side][name] += after[name] - before[name]
        return sample

    for number, start in enumerate(range(0, len(api_ids), round_size)):
        api_round = api_ids[start : start + round_size]
        floor_round = floor_ids[start : start + round_size]
        if number % 2 == 0:
            api_samples.append(await timed("api", api_round, via_api))
            floor_samples.append(await timed("floor", floor_round, via_sdk))
        else:
            floor_samples.append(await timed("floor", floor_round, via_sdk))
            api_samples.append(await timed("api", api_round, via_api))
    api, floor = merge(api_samples), merge(floor_samples)
    per_approval = {
        side: {name: seconds * 1000 / count for name, seconds in cpu[side].items()}
        for side, count in (("api", api.count), ("floor", floor.count))
    }
    result: dict[str, Any] = {
        "concurrency": concurrency,
        "approvals": api.count,
        "approve_p50_ms": percentile(api.latencies_ms, 50),
        "approve_p95_ms": percentile(api.latencies_ms, 95),
        "approve_p99_ms": percentile(api.latencies_ms, 99),
        "floor_p50_ms": percentile(floor.latencies_ms, 50),
        "floor_p95_ms": percentile(floor.latencies_ms, 95),
        "floor_p99_ms": percentile(floor.latencies_ms, 99),
        "approvals_per_s": api.count / api.wall_seconds,
        "floor_per_s": floor.count / floor.wall_seconds,
        "api_cpu_ms_per_approval": per_approval["api"]["api"],
        "http_caller_cpu_ms_per_approval": per_approval["api"]["caller"],
        "sdk_caller_cpu_ms_per_approval": per_approval["floor"]["caller"],
        "cpu_ms_per_approval": per_approval["api"],
        "floor_cpu_ms_per_approval": per_approval["floor"],
        "cpu_share_of_wall": {n: s / windows["api"] for n, s in cpu["api"].items()},
        "floor_cpu_share_of_wall": {n: s / windows["floor"] for n, s in cpu["floor"].items()},
        **await history_per_approval(stack, api_ids),
    }
    result["p50_ratio"] = result["approve_p50_ms"] / result["floor_p50_ms"]
    result["p95_ratio"] = result["approve_p95_ms"] / result["floor_p95_ms"]
    result["p99_ratio"] = result["approve_p99_ms"] / result["floor_p99_ms"]
    return result


async def start_profiler(pid: int, output: Path | None) -> asyncio.subprocess.Process | None:
    """`py-spy record` of process `pid` into `output` (raw collapsed stacks, 200 Hz); None, and
    nothing started, when `output` is None."""
    if output is None:
        return None
    output.parent.mkdir(parents=True, exist_ok=True)
    return await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("py-spy")),
        "record",
        "--pid",
        str(pid),
        "--format",
        "raw",
        "--rate",
        "200",
        "--output",
        str(output),
    )


async def stop_profiler(profiler: asyncio.subprocess.Process | None) -> None:
    """Sends SIGINT (py-spy then writes its output) and waits for it to exit; a no-op for None."""
    # py-spy writes its output on SIGINT.
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        await profiler.wait()


def table(results: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """The human-readable report: per concurrency, approve vs floor latency (ms) and throughput (per
    s), their ratios, CPU per approval, history per approval; then enrolment rate and peak RSS (MB).
    """
    lines = [
        f"{'C':>3} {'side':<8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'per s':>8}",
    ]
    for r in results:
        c = r["concurrency"]
        lines.append(
            f"{c:>3} {'approve':<8} {r['approve_p50_ms']:>8.1f} {r['approve_p95_ms']:>8.1f} "
            f"{r['approve_p99_ms']:>8.1f} {r['approvals_per_s']:>8.1f}"
        )
        lines.append(
            f"{c:>3} {'floor':<8} {r['floor_p50_ms']:>8.1f} {r['floor_p95_ms']:>8.1f} "
            f"{r['floor_p99_ms']:>8.1f} {r['floor_per_s']:>8.1f}"
        )
        lines.append(
            f"{c:>3} {'ratio':<8} {r['p50_ratio']:>8.2f} {r['p95_ratio']:>8.2f} "
            f"{r['p99_ratio']:>8.2f} {r['approvals_per_s'] / r['floor_per_s']:>8.2f}"
        )
        for label, key, share in (
            ("approve", "cpu_ms_per_approval", "cpu_share_of_wall"),
            ("floor", "floor_cpu_ms_per_approval", "floor_cpu_share_of_wall"),
        ):
            split = ", ".join(
                f"{name} {ms:.1f} ms ({r[share][name]:.0%})" for name, ms in r[key].items()
            )
            lines.append(f"{c:>3} CPU/approval {label:<8} {split}  (share of wall on CPU)")
        lines.append(
            f"{c:>3} history per approval: {r['history_events_per_approval']:.1f} events, "
            f"{r['workflow_tasks_per_approval']:.1f} workflow tasks"
        )
    lines.append(f"enrolment through the API: {summary['enrol_per_s']:.1f}/s")
    if summary.get("bulk_enrolment"):
        lines.append(bulk_enrol.line(summary["bulk_enrolment"]))
    lines.append(
        f"with {summary['waiting_instances']} instances waiting at their gates: "
        f"worker peak RSS {summary['worker_rss_mb']:.0f} MB, "
        f"API peak RSS {summary['api_rss_mb']:.0f} MB"
    )
    return "\n".join(lines)


def stack_configuration(stack: Stack) -> dict[str, Any]:
    """What a run measured, beside its figures: the dev server's dynamic config
    (`server_config`), and the worker's sandbox and sticky-cache settings (its environment may
    set them: the stack passes the bench's `CAMPAIGN_ENGINE_*` variables on)."""
    return {
        "server_config": dict(stack.server.dynamic_config),
        "worker_workflow_sandbox": stack.settings.worker_workflow_sandbox,
        "worker_max_cached_workflows": stack.settings.resolved_max_cached_workflows,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the whole benchmark on a private stack in a temporary state dir and prints the table.

    Returns the summary `main` writes to `--out`; progress lines go to stderr.
    """
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    per_side = args.n + WARM_UP
    with tempfile.TemporaryDirectory(prefix="campaign-engine-bench-") as state_dir:
        async with running_stack(
            Path(state_dir),
            payload_encryption=not args.no_encryption,
            dynamic_config=server_config(args.server_config),
        ) as stack:
            total = 2 * per_side * len(concurrencies)
            started = time.monotonic()
            ids, enrol_per_s = await enrol_via_api(stack, total, args.enrol_concurrency)
            await wait_at_gates(stack, total, within=60 + total / 5)
            print(
                f"enrolled {total} through the API at {enrol_per_s:.1f}/s; all at their gates "
                f"after {time.monotonic() - started:.1f} s",
                file=sys.stderr,
            )
            profilers = [
                await start_profiler(stack.api.pid, args.profile_api),
                await start_profiler(stack.workers[0].pid, args.profile_worker),
            ]
            results = []
            for index, concurrency in enumerate(concurrencies):
                mine = ids[index * 2 * per_side : (index + 1) * 2 * per_side]
                round_size = args.round or max(4 * concurrency, 20)
                results.append(
                    await compare(stack, mine[:per_side], mine[per_side:], concurrency, round_size)
                )
                print(json.dumps(results[-1]), file=sys.stderr)
            for profiler in profilers:
                await stop_profiler(profiler)
            started = time.monotonic()
            sdk_enrol_per_s = await enrol_via_sdk(stack, args.waiting, 32)
            await wait_at_gates(stack, args.waiting, within=120 + args.waiting / 5)
            print(
                f"enrolled {args.waiting} waiting instances with the SDK at "
                f"{sdk_enrol_per_s:.1f}/s; at their gates after "
                f"{time.monotonic() - started:.1f} s",
                file=sys.stderr,
            )
            worker_rss = peak_rss_mb(stack.workers[0].pid)
            api_rss = peak_rss_mb(stack.api.pid)
            configuration = stack_configuration(stack)
            # After the peak RSS is read: the bulk leads wait at their gates too.
            bulk = (
                await bulk_enrol.bulk_enrolment(stack, args.bulk_leads) if args.bulk_leads else None
            )
            if bulk:
                print(json.dumps(bulk), file=sys.stderr)
    # The headline keys stay C=16's, as before C=64 joined the defaults (issue 10's throughput
    # target is at C=16); without a C=16 run, the last concurrency given.
    headline = next((r for r in results if r["concurrency"] == HEADLINE_CONCURRENCY), results[-1])
    summary: dict[str, Any] = {
        **{
            key: headline[key]
            for key in (
                "approve_p50_ms",
                "approve_p99_ms",
                "floor_p50_ms",
                "floor_p99_ms",
                "p50_ratio",
                "p99_ratio",
                "approvals_per_s",
                "floor_per_s",
            )
        },
        "enrol_per_s": enrol_per_s,
        "payload_encryption": not args.no_encryption,
        "worker_cpu_ms_per_approval": headline["cpu_ms_per_approval"]["worker"],
        "waiting_instances": args.waiting,
        "worker_rss_mb": worker_rss,
        "api_rss_mb": api_rss,
        "headline_concurrency": headline["concurrency"],
        "sdk_enrol_per_s": sdk_enrol_per_s,
        # Issue 20: leads accepted per second through the batch endpoint (1,000 per batch), and
        # those leads reaching their first gate per second; None without --bulk-leads.
        "bulk_enrol_per_s": bulk["bulk_enrol_per_s"] if bulk else None,
        "gates_per_s": bulk["gates_per_s"] if bulk else None,
        "bulk_enrolment": bulk,
        "by_concurrency": {str(r["concurrency"]): r for r in results},
        **configuration,
    }
    print(table(results, summary))
    return summary


def main(argv: list[str] | None = None) -> int:
    """`python -m bench`: runs the benchmark and writes the JSON summary to `--out`; returns 0."""
    args = arguments(argv)
    summary = asyncio.run(run(args))
    write_json(args.out, summary)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
