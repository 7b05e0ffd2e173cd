"""What Temporal's own execution status says about a lead, where the workflow cannot say it.

Operators steer instances with the Web UI's and the CLI's own buttons too. "Request
Cancellation" reaches the workflow (patch `cancel-as-stop`: it stops `CANCELED` and says so
itself), but "Terminate", a reset (which terminates the run it replaces), an execution timeout
and a workflow failed by Temporal (a non-determinism error on a worker that fails workflows for
it) close the execution with no workflow code running: its last published state — the query
replays the history up to the end, the search attributes keep their last upsert — still says
`pending`, with a gate open. So whatever the workflow last said is read together with the
execution's status (`DescribeWorkflowExecution`, or a visibility row's `ExecutionStatus`):

| execution status | what the workflow last said | the lead reads |
| --- | --- | --- |
| Running, Completed | anything | what the workflow said |
| any other | `completed`, `stopped` or `failed` (note 1) | what the workflow said |
| Canceled | `running` or `pending` (cancelled before `cancel-as-stop`) | `stopped`, `CANCELED` |
| Terminated | `running` or `pending` | `stopped`, `TERMINATED` |
| TimedOut | `running` or `pending` | `failed`, `TIMED_OUT` |
| Failed | `running` or `pending`, or no answer | `failed`, `WORKFLOW_FAILED` |

(1) The lead had ended already: e.g. stopped, then closed while a webhook notice was retried.

A lead read so has no open gate (`hasPendingApproval: false`, no pending content, no ETag) and
no scheduled delivery; its audit (gate decisions, deliveries, inbound messages) is kept.
"""

from __future__ import annotations

from dataclasses import replace

from temporalio.client import WorkflowExecutionStatus

from workflows.types import LeadStatus, StopReason, WorkflowStatus

OPEN_LEAD_STATUSES = frozenset({WorkflowStatus.RUNNING, WorkflowStatus.PENDING})
"""What an instance says while it can still act: a closed execution saying it is stale."""

CLOSED_AS: dict[WorkflowExecutionStatus, tuple[WorkflowStatus, StopReason]] = {
    WorkflowExecutionStatus.CANCELED: (WorkflowStatus.STOPPED, StopReason.CANCELED),
    WorkflowExecutionStatus.TERMINATED: (WorkflowStatus.STOPPED, StopReason.TERMINATED),
    WorkflowExecutionStatus.TIMED_OUT: (WorkflowStatus.FAILED, StopReason.TIMED_OUT),
    WorkflowExecutionStatus.FAILED: (WorkflowStatus.FAILED, StopReason.WORKFLOW_FAILED),
}
"""How an execution closed without the workflow saying so: the lead's status and stop reason."""

VISIBILITY_NAMES: dict[WorkflowExecutionStatus, str] = {
    WorkflowExecutionStatus.CANCELED: "Canceled",
    WorkflowExecutionStatus.TERMINATED: "Terminated",
    WorkflowExecutionStatus.TIMED_OUT: "TimedOut",
    WorkflowExecutionStatus.FAILED: "Failed",
}
"""`ExecutionStatus` as Temporal's visibility queries spell it."""


def closed_as(
    execution: WorkflowExecutionStatus | None, said: WorkflowStatus | None
) -> tuple[WorkflowStatus, StopReason] | None:
    """The lead's (status, stop reason) when the execution closed without the workflow saying
    so (the table above), else None: what the workflow said (`said`, None when it could not be
    read) stands."""
    closed = CLOSED_AS.get(execution) if execution is not None else None
    if closed is None:
        return None
    if said is not None and said not in OPEN_LEAD_STATUSES:
        return None
    return closed


def truthful(status: LeadStatus, execution: WorkflowExecutionStatus | None) -> LeadStatus:
    """`status` as the workflow last said it, corrected by the execution's status (`closed_as`):
    no open gate, no pending content, no scheduled delivery, the stop reason of the button."""
    closed = closed_as(execution, status.workflow_status)
    if closed is None:
        return status
    workflow_status, reason = closed
    return replace(
        status,
        workflow_status=workflow_status,
        workflow_stop_reason=reason,
        has_pending_approval=False,
        pending_content=None,
        gate_expires_at=None,
        gate_id=None,
        scheduled=None,
    )
