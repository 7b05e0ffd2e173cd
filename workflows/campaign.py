"""The per-lead campaign workflow: draft → approval gate → deliver → delay, step after step."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows.types import (
        DELIVER_MESSAGE_ACTIVITY,
        DRAFT_CONTENT_ACTIVITY,
        WORKFLOW_TYPE,
        ActivityErrorType,
        ApprovalOutcome,
        ApprovalOutcomeRequest,
        ApprovalRefusal,
        ApproveRequest,
        CampaignInput,
        CampaignStep,
        DeliveryReceipt,
        DeliveryRequest,
        DraftedContent,
        DraftRequest,
        GateDecision,
        LeadStatus,
        StopReason,
        WorkflowStatus,
    )

# Enough to answer the query that follows each approve call even under a burst of concurrent
# approvals, small enough that a flood of signals cannot grow the workflow's state.
APPROVAL_OUTCOMES_KEPT = 128

DRAFT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=10,
    non_retryable_error_types=[ActivityErrorType.TEMPLATE_RENDER_ERROR.value],
)
DELIVERY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    non_retryable_error_types=[ActivityErrorType.PERMANENT_DELIVERY_ERROR.value],
)


class Phase(StrEnum):
    DRAFTING = "drafting"
    AWAITING_APPROVAL = "awaiting_approval"
    DELIVERING = "delivering"
    DELAYING = "delaying"
    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"


_STATUS_OF_PHASE = {
    Phase.DRAFTING: WorkflowStatus.RUNNING,
    Phase.AWAITING_APPROVAL: WorkflowStatus.PENDING,
    Phase.DELIVERING: WorkflowStatus.RUNNING,
    Phase.DELAYING: WorkflowStatus.PENDING,
    Phase.COMPLETED: WorkflowStatus.COMPLETED,
    Phase.STOPPED: WorkflowStatus.STOPPED,
    Phase.FAILED: WorkflowStatus.FAILED,
}
_CLOSED_PHASES = {Phase.COMPLETED, Phase.STOPPED, Phase.FAILED}


@workflow.defn(name=WORKFLOW_TYPE)
class CampaignWorkflow:
    @workflow.init
    def __init__(self, input: CampaignInput) -> None:
        self._input = input
        self._phase = Phase.DRAFTING
        self._latest_step: str | None = None
        self._stop_reason: StopReason | None = None
        self._pending_content: DraftedContent | None = None
        self._gate_decisions: list[GateDecision] = []
        # request id → (applied, refusal); dicts keep insertion order, so the first key is oldest.
        self._approval_outcomes: dict[str, tuple[bool, ApprovalRefusal | None]] = {}

    @workflow.run
    async def run(self, input: CampaignInput) -> LeadStatus:
        for step in input.campaign.steps:
            self._latest_step = step.id
            self._phase = Phase.DRAFTING
            content = await self._draft(step)
            if content is None:
                break
            if step.requires_approval:
                self._pending_content = content
                self._phase = Phase.AWAITING_APPROVAL
                await workflow.wait_condition(lambda: self._phase != Phase.AWAITING_APPROVAL)
                self._pending_content = None
            self._phase = Phase.DELIVERING
            if not await self._deliver(content):
                break
            if step is not input.campaign.steps[-1] and step.delay_seconds > 0:
                self._phase = Phase.DELAYING
                await workflow.sleep(
                    timedelta(seconds=step.delay_seconds), summary=f"delay after {step.id}"
                )
        else:
            self._phase = Phase.COMPLETED
        if self._phase == Phase.FAILED:
            raise ApplicationError(
                f"campaign instance failed at step {self._latest_step}: {self._stop_reason}",
                self._status(),
                type=self._stop_reason.value if self._stop_reason else None,
                non_retryable=True,
            )
        return self._status()

    async def _draft(self, step: CampaignStep) -> DraftedContent | None:
        try:
            content: DraftedContent = await workflow.execute_activity(
                DRAFT_CONTENT_ACTIVITY,
                DraftRequest(self._input.workflow_instance_id, step, self._input.lead),
                result_type=DraftedContent,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=DRAFT_RETRY,
                summary=f"draft {step.id}",
            )
        except ActivityError:
            self._end(Phase.FAILED, StopReason.DRAFT_FAILED)
            return None
        return content

    async def _deliver(self, content: DraftedContent) -> bool:
        try:
            await workflow.execute_activity(
                DELIVER_MESSAGE_ACTIVITY,
                DeliveryRequest(workflow.info().workflow_id, self._input.lead, content),
                result_type=DeliveryReceipt,
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=DELIVERY_RETRY,
                summary=f"deliver {content.step_id}",
            )
        except ActivityError:
            self._end(Phase.FAILED, StopReason.DELIVERY_FAILED)
            return False
        return True

    def _end(self, phase: Phase, reason: StopReason | None) -> None:
        self._phase = phase
        self._stop_reason = reason
        self._pending_content = None

    @workflow.signal
    def approve(self, request: ApproveRequest) -> None:
        """Clears the open gate; refused (and recorded as such) when none is open."""
        refusal: ApprovalRefusal | None = None
        if self._phase in _CLOSED_PHASES:
            refusal = ApprovalRefusal.WORKFLOW_CLOSED
        elif self._phase != Phase.AWAITING_APPROVAL:
            already = self._gate_decisions and self._gate_decisions[-1].step_id == self._latest_step
            refusal = ApprovalRefusal.ALREADY_APPROVED if already else ApprovalRefusal.NO_GATE_OPEN
        else:
            assert self._latest_step is not None
            self._gate_decisions.append(
                GateDecision(
                    step_id=self._latest_step,
                    decision="approved",
                    decided_by=request.approved_by,
                    decided_at=workflow.now(),
                    request_id=request.request_id,
                )
            )
            # The gate closes here, not in the run loop, so the query that follows this
            # signal already reports it as applied.
            self._phase = Phase.DELIVERING
        self._record_outcome(request.request_id, refusal)

    def _record_outcome(self, request_id: str, refusal: ApprovalRefusal | None) -> None:
        self._approval_outcomes.pop(request_id, None)
        self._approval_outcomes[request_id] = (refusal is None, refusal)
        while len(self._approval_outcomes) > APPROVAL_OUTCOMES_KEPT:
            del self._approval_outcomes[next(iter(self._approval_outcomes))]

    @workflow.query
    def lead_status(self) -> LeadStatus:
        return self._status()

    @workflow.query
    def approval_outcome(self, request: ApprovalOutcomeRequest) -> ApprovalOutcome:
        """The outcome of one approve signal, with the lead status it left behind."""
        applied, refusal = self._approval_outcomes.get(request.request_id, (None, None))
        return ApprovalOutcome(request.request_id, applied, refusal, self._status())

    def _status(self) -> LeadStatus:
        return LeadStatus(
            lead_id=self._input.lead.id,
            workflow_status=_STATUS_OF_PHASE[self._phase],
            workflow_instance_id=self._input.workflow_instance_id,
            latest_step=self._latest_step,
            workflow_stop_reason=self._stop_reason,
            has_pending_approval=self._phase == Phase.AWAITING_APPROVAL,
            pending_content=self._pending_content,
            gate_decisions=list(self._gate_decisions),
        )
