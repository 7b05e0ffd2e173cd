"""`make bench-scaling`: how cost grows, on private stacks like `make bench`'s.

Two questions (issue 10, part 4):

1. **Approve latency against the number of instances waiting.** One stack (dev server, API, one
   worker). For each count W in `--waiting` (ascending), leads are enrolled through the API until
   W instances (plus the ones the approvals will use) wait at their gates, timing the enrolment;
   then approve through the API and the bare-SDK floor (signal + query) are compared exactly as
   `make bench` does (`bench.__main__.compare`), at each `--concurrency`, on instances picked at
   random among all those waiting (with more waiting than the worker's cache holds, most of them
   are replayed on their approval, as in production).
2. **Enrolment throughput against the number of worker processes.** A fresh stack. For each count
   P in `--workers` (ascending), worker processes (`campaign-engine worker`, real OS processes)
   are added until P run on the one dev server; then `--enrol-batch` leads are enrolled through
   the API: enrolments answered 201 per second, and instances at their gates per second.

Every phase reads each process's CPU (`/proc/<pid>/stat`: dev server, workers, API, this caller)
and the whole machine's (`/proc/stat`: other engineers' processes too). Load averages are recorded
at start and end. Prints a table and writes `var/bench/scaling.json`.

python -m bench.scaling [--waiting 1000,10000] [--n 100] [--concurrency 1] [--workers 1,2,4]
                        [--enrol-batch 1000] [--enrol-concurrency 16] [--out var/bench/scaling.json]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.__main__ import (
    WARM_UP,
    compare,
    cpu_by_process,
    enrol_via_api,
    stack_configuration,
    stack_pids,
    wait_at_gates,
)
from bench.measure import write_json
from bench.stack import (
    Stack,
    cpu_seconds,
    current_rss_mb,
    peak_rss_mb,
    running_stack,
    server_config,
)


def arguments(argv: list[str] | None) -> argparse.Namespace:
    """The command line of `python -m bench.scaling` (see the module docstring); `argv` None reads
    `sys.argv[1:]`."""
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__)
    parser.add_argument(
        "--waiting", default="1000,10000", help="comma-separated instances waiting at their gates"
    )
    parser.add_argument("--n", type=int, default=100, help="approvals per side per concurrency")
    parser.add_argument("--concurrency", default="1", help="comma-separated concurrent approvers")
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker process counts")
    parser.add_argument(
        "--enrol-batch", type=int, default=1000, help="enrolments timed per worker count"
    )
    parser.add_argument("--enrol-concurrency", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("var/bench/scaling.json"))
    parser.add_argument(
        "--server-config",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="dev-server dynamic config over DYNAMIC_CONFIG (repeatable), as `python -m bench`",
    )
    return parser.parse_args(argv)


def _counts(text: str) -> list[int]:
    return sorted({int(part) for part in text.split(",") if part.strip()})


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (every core, every process, from /proc/stat:
    all but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


async def enrol_to_gates(
    stack: Stack, count: int, waiting_before: int, concurrency: int
) -> tuple[list[str], dict[str, Any]]:
    """Enrols `count` leads through the API and waits until all of them (and the `waiting_before`
    already there) wait at their gates.

    Returns the new instance ids and the figures: enrolments per second (201s over the enrolling
    time), gates per second (`count` over the time from the first enrolment until visibility
    counts them all, so up to ~1 s of visibility lag and 0.5 s of polling are in it), each
    process role's CPU ms per enrolment and CPU seconds per wall second (cores) over that whole
    window, the same for every worker process on its own, and the machine's busy cores.
    """
    pids = stack_pids(stack)
    before = cpu_by_process(pids)
    workers_before = [cpu_seconds(pid) for pid in pids["worker"]]
    machine_before = machine_busy_seconds()
    started = time.perf_counter()
    ids, enrol_per_s = await enrol_via_api(stack, count, concurrency)
    enrolled_after = time.perf_counter() - started
    await wait_at_gates(stack, waiting_before + count, within=120 + count / 2)
    wall = time.perf_counter() - started
    after = cpu_by_process(pids)
    workers_after = [cpu_seconds(pid) for pid in pids["worker"]]
    spent = {name: after[name] - before[name] for name in pids}
    return ids, {
        "enrolled": count,
        "waiting_before": waiting_before,
        "worker_processes": len(pids["worker"]),
        "enrol_per_s": enrol_per_s,
        "enrol_seconds": enrolled_after,
        "gates_per_s": count / wall,
        "seconds_to_gates": wall,
        "cpu_ms_per_enrolment": {name: s * 1000 / count for name, s in spent.items()},
        "cpu_cores": {name: s / wall for name, s in spent.items()},
        "worker_cpu_cores_each": [
            (a - b) / wall for a, b in zip(workers_after, workers_before, strict=True)
        ],
        "machine_busy_cores": (machine_busy_seconds() - machine_before) / wall,
    }


def rss_mb(stack: Stack) -> dict[str, float]:
    """Peak resident set (MB, `VmHWM`) of the dev server, each worker (the largest), and the API."""
    assert stack.server.pid is not None
    return {
        "dev_server": peak_rss_mb(stack.server.pid),
        "worker": max(peak_rss_mb(worker.pid) for worker in stack.workers),
        "api": peak_rss_mb(stack.api.pid),
    }


async def approve_by_waiting(
    stack: Stack,
    waiting_counts: list[int],
    n: int,
    concurrencies: list[int],
    enrol_concurrency: int,
) -> dict[str, Any]:
    """Question 1 on a fresh stack: per count waiting (ascending), the enrolment that got there and
    the approve-vs-floor comparison at each concurrency, on instances picked at random among all
    those waiting; keyed by the count as a string."""
    per_side = n + WARM_UP
    reserve = 2 * per_side * len(concurrencies)
    results: dict[str, Any] = {}
    waiting_ids: list[str] = []
    rng = random.Random(1)
    waiting = 0
    for count in waiting_counts:
        level_started = time.monotonic()
        add = count + reserve - waiting
        ids, enrolment = await enrol_to_gates(stack, add, waiting, enrol_concurrency)
        print(
            f"{count} waiting: enrolled {add} at {enrolment['enrol_per_s']:.1f}/s, at "
            f"their gates at {enrolment['gates_per_s']:.1f}/s",
            file=sys.stderr,
        )
        by_concurrency: dict[str, Any] = {}
        # Any of the waiting, as a reviewer would pick: not only the latest, which the worker's
        # cache (`max_cached_workflows`) still holds.
        waiting_ids += ids
        mine = rng.sample(waiting_ids, reserve)
        waiting_ids = sorted(set(waiting_ids) - set(mine))
        for index, concurrency in enumerate(concurrencies):
            chunk = mine[index * 2 * per_side : (index + 1) * 2 * per_side]
            result = await compare(
                stack, chunk[:per_side], chunk[per_side:], concurrency, max(4 * concurrency, 20)
            )
            by_concurrency[str(concurrency)] = result
            print(json.dumps(result), file=sys.stderr)
        waiting = count
        results[str(count)] = {
            "waiting_instances": count,
            "enrolment": enrolment,
            "by_concurrency": by_concurrency,
            "rss_mb": rss_mb(stack),
            "worker_current_rss_mb": current_rss_mb(stack.workers[0].pid),
            "seconds": time.monotonic() - level_started,
        }
    return results


def kb_per_waiting(by_waiting: dict[str, Any]) -> float | None:
    """The worker's memory per waiting instance, KB: the growth of its current RSS (`VmRSS`)
    between the smallest and the largest count waiting, over the instances added between them
    (the reserve the approvals use is there at both, so it cancels). None with one count."""
    levels = sorted(by_waiting.values(), key=lambda level: level["waiting_instances"])
    if len(levels) < 2:
        return None
    first, last = levels[0], levels[-1]
    grown = float(last["worker_current_rss_mb"]) - float(first["worker_current_rss_mb"])
    added = int(last["waiting_instances"]) - int(first["waiting_instances"])
    return grown * 1024 / added


async def enrolment_by_workers(
    stack: Stack, worker_counts: list[int], batch: int, enrol_concurrency: int
) -> dict[str, Any]:
    """Question 2 on one stack: workers are added up to each count in turn (ascending), a short
    warm-up (10 enrolments per worker) lets the new ones start, then `batch` enrolments are timed;
    keyed by the worker count as a string. The stack's instances at their gates so far must all be
    of its campaign (a fresh stack's)."""
    query = f"HasPendingApproval = true AND CampaignId = '{stack.campaign_id}'"
    waiting = (await stack.temporal.count_workflows(query)).count
    results: dict[str, Any] = {}
    for workers in worker_counts:
        while len(stack.workers) < workers:
            await stack.start_worker()
        warm_up = 10 * workers
        await enrol_to_gates(stack, warm_up, waiting, enrol_concurrency)
        waiting += warm_up
        _, enrolment = await enrol_to_gates(stack, batch, waiting, enrol_concurrency)
        waiting += batch
        enrolment["rss_mb"] = rss_mb(stack)
        results[str(workers)] = enrolment
        print(f"{workers} workers: {json.dumps(enrolment)}", file=sys.stderr)
    return results


def _split(figures: dict[str, float], unit: str) -> str:
    return ", ".join(f"{name} {value:.1f}{unit}" for name, value in figures.items())


def table(summary: dict[str, Any]) -> str:
    """The human-readable report: approve vs floor by count waiting, then enrolment by workers."""
    lines = [
        f"load average {summary['load_average_start']} at start, "
        f"{summary['load_average_end']} at end; {summary['seconds']:.0f} s",
        "",
        f"{'waiting':>8} {'C':>3} {'approve p50/p99 ms':>19} {'floor p50/p99 ms':>17} "
        f"{'ratio p50/p99':>14} {'enrol/s':>8} {'gates/s':>8}",
    ]
    for count, level in summary["approve_by_waiting"].items():
        enrolment = level["enrolment"]
        for c, r in level["by_concurrency"].items():
            lines.append(
                f"{count:>8} {c:>3} {r['approve_p50_ms']:>9.1f} / {r['approve_p99_ms']:>6.1f} "
                f"{r['floor_p50_ms']:>8.1f} / {r['floor_p99_ms']:>6.1f} "
                f"{r['p50_ratio']:>6.2f} / {r['p99_ratio']:>5.2f} "
                f"{enrolment['enrol_per_s']:>8.1f} {enrolment['gates_per_s']:>8.1f}"
            )
            lines.append(
                f"{'':>12} CPU ms/approval: {_split(r['cpu_ms_per_approval'], '')}; "
                f"floor: {_split(r['floor_cpu_ms_per_approval'], '')}"
            )
        lines.append(
            f"{'':>12} enrolling, CPU ms/enrolment: "
            f"{_split(enrolment['cpu_ms_per_enrolment'], '')}; cores: "
            f"{_split(enrolment['cpu_cores'], '')}; machine {enrolment['machine_busy_cores']:.2f}"
        )
        lines.append(
            f"{'':>12} peak RSS MB: {_split(level['rss_mb'], '')}; worker now "
            f"{level['worker_current_rss_mb']:.0f} MB"
        )
    if summary["worker_kb_per_waiting"] is not None:
        lines.append(
            f"worker memory per waiting instance: {summary['worker_kb_per_waiting']:.1f} KB"
        )
    lines += [
        "",
        f"{'workers':>8} {'enrol/s':>8} {'gates/s':>8}  CPU ms/enrolment and cores by process",
    ]
    for workers, e in summary["enrolment_by_workers"].items():
        lines.append(
            f"{workers:>8} {e['enrol_per_s']:>8.1f} {e['gates_per_s']:>8.1f}  "
            f"{_split(e['cpu_ms_per_enrolment'], ' ms')}"
        )
        each = ", ".join(f"{cores:.2f}" for cores in e["worker_cpu_cores_each"])
        lines.append(
            f"{'':>27}cores: {_split(e['cpu_cores'], '')} (each worker {each}); "
            f"machine {e['machine_busy_cores']:.2f}"
        )
    return "\n".join(lines)


async def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Both questions, one after the other, each on its own private stack; returns the summary
    `main` writes to `--out` (`command` recorded in it) and prints the table."""
    started_at = datetime.datetime.now(datetime.UTC)
    load_start = os.getloadavg()
    started = time.monotonic()
    dynamic_config = server_config(args.server_config)
    with tempfile.TemporaryDirectory(prefix="campaign-engine-scaling-") as state_dir:
        async with running_stack(Path(state_dir), dynamic_config=dynamic_config) as stack:
            configuration = stack_configuration(stack)
            by_waiting = await approve_by_waiting(
                stack,
                _counts(args.waiting),
                args.n,
                _counts(args.concurrency),
                args.enrol_concurrency,
            )
    by_workers: dict[str, Any] = {}
    if _counts(args.workers):
        with tempfile.TemporaryDirectory(prefix="campaign-engine-scaling-") as state_dir:
            async with running_stack(
                Path(state_dir), workers=0, dynamic_config=dynamic_config
            ) as stack:
                by_workers = await enrolment_by_workers(
                    stack, _counts(args.workers), args.enrol_batch, args.enrol_concurrency
                )
    summary: dict[str, Any] = {
        "command": command,
        "started_at": started_at.isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "load_average_start": [round(value, 2) for value in load_start],
        "load_average_end": [round(value, 2) for value in os.getloadavg()],
        "seconds": time.monotonic() - started,
        "approvals_per_side": args.n,
        "enrol_concurrency": args.enrol_concurrency,
        "approve_by_waiting": by_waiting,
        "worker_kb_per_waiting": kb_per_waiting(by_waiting),
        "enrolment_by_workers": by_workers,
        **configuration,
    }
    print(table(summary))
    return summary


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.scaling`: runs both questions and writes the JSON summary to `--out`."""
    args = arguments(argv)
    command = " ".join(["python -m bench.scaling", *(sys.argv[1:] if argv is None else argv)])
    summary = asyncio.run(run(args, command))
    write_json(args.out, summary)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
