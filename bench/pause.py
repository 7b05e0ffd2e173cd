"""How a campaign pause and resume reach many instances (`make bench-pause`, issue 14).

On a private stack (`bench.stack`): N leads wait at their gates; the campaign is paused; all N are
approved (each answers 200, and nothing may be sent); the campaign is resumed; every message must
then be sent exactly once. Prints and writes `var/bench/pause.json`: the pause and resume answers'
latency, how long the batch signal took to reach every instance, approvals per second while
paused, messages sent while paused (must be 0), and the time from the resume's 200 to the first
and the last message sent.

    python -m bench.pause --n 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import BatchOperationState
from temporalio.api.workflowservice.v1 import (
    DescribeBatchOperationRequest,
    ListBatchOperationsRequest,
)
from temporalio.client import Client

from bench.__main__ import enrol_via_api, wait_for_count
from bench.measure import run_concurrently, write_json
from bench.stack import Stack, running_stack

CONCURRENCY = 32
"""Requests in flight while enrolling and approving."""


async def _batch_seconds(temporal: Client, within: float = 600) -> dict[str, Any]:
    """The newest batch operation's run: seconds from its start to its completion, and counts."""
    service = temporal.workflow_service
    listed = await service.list_batch_operations(
        ListBatchOperationsRequest(namespace=temporal.namespace, page_size=10)
    )
    if not listed.operation_info:
        return {"job_id": None}
    newest = max(listed.operation_info, key=lambda info: info.start_time.ToDatetime())
    started = time.monotonic()
    while True:
        described = await service.describe_batch_operation(
            DescribeBatchOperationRequest(namespace=temporal.namespace, job_id=newest.job_id)
        )
        if described.state != BatchOperationState.BATCH_OPERATION_STATE_RUNNING:
            break
        if time.monotonic() - started > within:
            break
        await asyncio.sleep(0.1)
    seconds = (
        described.close_time.ToDatetime() - described.start_time.ToDatetime()
    ).total_seconds()
    return {
        "job_id": newest.job_id,
        "state": BatchOperationState.Name(described.state),
        "seconds": round(seconds, 3),
        "total": described.total_operation_count,
        "completed": described.complete_operation_count,
        "failed": described.failure_operation_count,
    }


def _outbox(stack: Stack) -> int:
    directory = stack.settings.resolved_outbox_dir
    return len(list(directory.glob("*.eml"))) if directory.exists() else 0


async def measure(n: int, workers: int) -> dict[str, Any]:
    """Runs the scenario for `n` instances on `workers` worker processes; returns the figures."""
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as state:
        async with running_stack(Path(state), workers=workers) as stack:
            campaign = f"CampaignId = '{stack.campaign_id}'"
            ids, enrolments_per_s = await enrol_via_api(stack, n, CONCURRENCY)
            at_gates = await wait_for_count(
                stack, f"{campaign} AND HasPendingApproval = true", n, within=600, poll=0.2
            )

            started = time.monotonic()
            paused = await stack.http.post(f"{stack.campaign_url}/pause", headers=stack.auth)
            pause_ms = (time.monotonic() - started) * 1000
            assert paused.status_code == 200, paused.text
            pause_batch = await _batch_seconds(stack.temporal)

            statuses: list[int] = []

            async def approve(instance_id: str) -> None:
                url = f"{stack.campaign_url}/workflow-instances/{instance_id}/approve"
                statuses.append((await stack.http.post(url, headers=stack.auth)).status_code)

            approvals = await run_concurrently(ids, CONCURRENCY, approve)
            held = await wait_for_count(
                stack,
                f"{campaign} AND HasPendingApproval = false AND LeadWorkflowStatus = 'pending'",
                n,
                within=600,
                poll=0.2,
            )
            await asyncio.sleep(2.0)
            sent_while_paused = _outbox(stack)

            started = time.monotonic()
            resumed = await stack.http.post(f"{stack.campaign_url}/resume", headers=stack.auth)
            resume_ms = (time.monotonic() - started) * 1000
            assert resumed.status_code == 200, resumed.text
            first = last = None
            while time.monotonic() - started < 900:
                sent = _outbox(stack)
                if sent and first is None:
                    first = time.monotonic() - started
                if sent >= n:
                    last = time.monotonic() - started
                    break
                await asyncio.sleep(0.1)
            resume_batch = await _batch_seconds(stack.temporal)
            sent_in_all = _outbox(stack)
            await wait_for_count(
                stack, f"{campaign} AND LeadWorkflowStatus = 'completed'", n, within=120, poll=0.2
            )
    return {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "n": n,
        "workers": workers,
        "load_average_start": [round(x, 2) for x in load_start],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "enrolments_per_s": round(enrolments_per_s, 1),
        "all_at_gates_after_s": round(at_gates, 1),
        "pause_ms": round(pause_ms, 1),
        "pause_batch": pause_batch,
        "approvals_answered_200": statuses.count(200),
        "approvals_per_s_while_paused": round(n / approvals.wall_seconds, 1),
        "all_held_after_s": round(held, 1),
        "sent_while_paused": sent_while_paused,
        "resume_ms": round(resume_ms, 1),
        "resume_batch": resume_batch,
        "first_sent_after_resume_s": round(first, 2) if first is not None else None,
        "all_sent_after_resume_s": round(last, 2) if last is not None else None,
        "sent": sent_in_all,
        "completed": n,
    }


def main() -> None:
    """`python -m bench.pause [--n N] [--workers W]`: prints the figures, writes the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=1000, help="instances (default 1000)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    args = parser.parse_args()
    figures = asyncio.run(measure(args.n, args.workers))
    write_json(Path("var/bench/pause.json"), figures)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
