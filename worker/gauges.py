"""Gauges the worker process reports beside its workflows: how many approval gates are open now.

A workflow can count what happens to it (the approval counters and histogram, from the workflow
metric meter), but "gates open now" is a fact about all instances: every worker counts them in
Temporal's visibility (`HasPendingApproval = true` on its task queue, running instances only) and
sets the gauge `campaign_approval_gates_open` on its runtime's metric meter, served on the worker's
Prometheus `/metrics`. No lead or campaign labels; every worker of a queue reports the same
number (take the max across workers). Visibility lags by up to about a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from temporalio.client import Client
from temporalio.runtime import Runtime

from workflows.search_attributes import HAS_PENDING_APPROVAL

logger = logging.getLogger("campaign_engine.worker")

OPEN_GATES_GAUGE = "campaign_approval_gates_open"
REPORT_EVERY_SECONDS = 10.0


def open_gates_query(task_queue: str) -> str:
    """The visibility query counting open gates on `task_queue` (a setting, not caller input)."""
    queue = task_queue.replace("'", "")
    return (
        f"TaskQueue = '{queue}' AND {HAS_PENDING_APPROVAL.name} = true "
        "AND ExecutionStatus = 'Running'"
    )


async def report_open_gates(
    client: Client, task_queue: str, every_seconds: float = REPORT_EVERY_SECONDS
) -> None:
    """Sets the gauge every `every_seconds` until cancelled; a failed count is logged, not raised
    (a visibility hiccup must not take the worker down)."""
    runtime = client.service_client.config.runtime or Runtime.default()
    gauge = runtime.metric_meter.create_gauge(
        OPEN_GATES_GAUGE, "Approval gates open now (Temporal visibility count).", "gates"
    )
    query = open_gates_query(task_queue)
    while True:
        try:
            gauge.set((await client.count_workflows(query)).count)
        except Exception as error:
            logger.warning("counting open gates failed: %s", error)
        await asyncio.sleep(every_seconds)


@contextlib.asynccontextmanager
async def reporting_open_gates(client: Client, task_queue: str) -> AsyncIterator[None]:
    """Runs `report_open_gates` for the life of the block."""
    task = asyncio.create_task(report_open_gates(client, task_queue))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
