"""The per-lead campaign workflow: draft → approval gate → deliver → delay, step after step."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, NoReturn, TypeVar

from temporalio import workflow
from temporalio.common import (
    MetricCounter,
    MetricHistogramFloat,
    RawValue,
    SearchAttributeUpdate,
)
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from workflows import activity_options as options
    from workflows import search_attributes, signal_inputs
    from workflows.types import (
        BUSINESS_DAYS_LATER_ACTIVITY,
        DELIVER_MESSAGE_ACTIVITY,
        DRAFT_CONTENT_ACTIVITY,
        NOTIFY_PENDING_APPROVAL_ACTIVITY,
        RELEASE_SEND_SLOT_ACTIVITY,
        WORKFLOW_TYPE,
        ActivityErrorType,
        ApprovalEvent,
        ApprovalOutcome,
        ApprovalOutcomeRecord,
        ApprovalOutcomeRequest,
        ApprovalRefusal,
        ApproveRequest,
        BusinessDaysRequest,
        BusinessDaysResult,
        CampaignInput,
        CampaignPauseEvent,
        CampaignStep,
        CarriedState,
        Decision,
        Deferral,
        DeliveryOutcome,
        DeliveryReceipt,
        DeliveryRecord,
        DeliveryRequest,
        DiscardRequest,
        DraftedContent,
        DraftRequest,
        FailureRecord,
        GateDecision,
        LeadEvent,
        LeadStatus,
        PendingApprovalNotice,
        ResumeAt,
        ResumePoint,
        ScheduledDelivery,
        StopReason,
        StopRecord,
        StopRequest,
        WorkflowStatus,
    )

# Enough to answer the query that follows each approve call even under a burst of concurrent
# approvals, small enough that a flood of signals cannot grow the workflow's state.
APPROVAL_OUTCOMES_KEPT = 128
SIGNAL_INPUT_PROBLEMS_KEPT = 5
# What a signal brings into state that is carried over continue-as-new is bounded, so the
# workflow's input stays under Temporal's payload limit (api/payload_limits.py counts these).
MAX_WHO_CHARS = 128
MAX_REQUEST_ID_CHARS = 64
MAX_IF_MATCH_TAGS = 16
"""Gate ids one conditional approval may name (`ApproveRequest.if_match`); the rest are cut."""
_FIELD_LIMITS = {
    "decided_by": MAX_WHO_CHARS,
    "request_id": MAX_REQUEST_ID_CHARS,
    "if_match": MAX_REQUEST_ID_CHARS,
    "at": MAX_REQUEST_ID_CHARS,
}
# Older spellings of "who", accepted from operators' scripts and replayed from old histories.
_WHO_ALIASES = {
    name: "decided_by"
    for name in ("by", "approved_by", "discarded_by", "reported_by", "stopped_by")
}
_Input = TypeVar("_Input")
EXCERPT_CHARS = 280

# Instances that got a stop during delivery before this patch waited for the send; newer ones
# cancel a delivery that has not handed anything over yet.
CANCEL_DELIVERY_ON_STOP = "cancel-delivery-on-stop"
# Instances that reach a phase change after this patch index their gate (GateId, GateOpenedAt,
# GateExpiresAt) and step (LatestStep) too: more in each upsert command.
GATE_SEARCH_ATTRIBUTES = "gate-search-attributes"
# Gates opened after this patch send reminders (timers) and a resolution notice (an activity).
APPROVAL_EVENTS = "approval-events"
PAUSE_RECHECK = timedelta(hours=1)
"""How long a delivery held by a paused campaign waits before asking the store again, should the
`campaign_resumed` signal have missed it (the resume's batch signal normally wakes it at once)."""
ANY_GATE = "*"
"""`If-Match: *`: any open gate (RFC 9110 §13.1.1)."""
# Instances whose business-day calculation fails for good after this patch end `failed` /
# `DELAY_FAILED` through the run loop; before it, the activity's error failed the run as it was.
DELAY_FAILED_PATCH = "delay-failed"


class Phase(StrEnum):
    """Where the run loop is: finer than `WorkflowStatus`, which it maps to; never leaves the
    workflow."""

    DRAFTING = "drafting"
    AWAITING_APPROVAL = "awaiting_approval"
    DELIVERING = "delivering"
    SCHEDULED = "scheduled"
    """Approved; waiting for the send window, a mailbox slot or the campaign's resume."""
    DELAYING = "delaying"
    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"


_STATUS_OF_PHASE = {
    Phase.DRAFTING: WorkflowStatus.RUNNING,
    Phase.AWAITING_APPROVAL: WorkflowStatus.PENDING,
    Phase.DELIVERING: WorkflowStatus.RUNNING,
    Phase.SCHEDULED: WorkflowStatus.PENDING,
    Phase.DELAYING: WorkflowStatus.PENDING,
    Phase.COMPLETED: WorkflowStatus.COMPLETED,
    Phase.STOPPED: WorkflowStatus.STOPPED,
    Phase.FAILED: WorkflowStatus.FAILED,
}
_CLOSED_PHASES = {Phase.COMPLETED, Phase.STOPPED, Phase.FAILED}


def _failure_of(step_id: str, error: ActivityError) -> FailureRecord:
    """What the activity reported last: its error type, message and attempt number."""
    cause = error.cause
    if isinstance(cause, ApplicationError):
        details = cause.details
        attempt = details[0] if details and isinstance(details[0], int) else None
        return FailureRecord(step_id, cause.type, cause.message, attempt)
    return FailureRecord(step_id, None, str(cause or error))


def _until(deadline: datetime) -> timedelta:
    """Time left until `deadline`; at least a millisecond, as a zero timeout means "none"."""
    return max(deadline - workflow.now(), timedelta(milliseconds=1))


def _metric_deliveries_deferred() -> MetricCounter:
    return workflow.metric_meter().create_counter(
        "campaign_deliveries_deferred",
        "Deliveries put off, by `reason`: outside_window, mailbox_cap, mailbox_spacing, "
        "campaign_paused.",
    )


def _metric_gates_opened() -> MetricCounter:
    return workflow.metric_meter().create_counter(
        "campaign_approval_gates_opened", "Approval gates opened (a continue-as-new is not one)."
    )


def _metric_gates_resolved() -> MetricCounter:
    return workflow.metric_meter().create_counter(
        "campaign_approval_gates_resolved",
        "Approval gates resolved, by `outcome`: approved, discarded, expired, stopped.",
    )


def _metric_gate_decision_seconds() -> MetricHistogramFloat:
    return workflow.metric_meter().create_histogram_float(
        "campaign_approval_gate_decision_seconds",
        "Time from a gate's opening to its resolution, by `outcome`.",
        "s",
    )


_DEFERRAL_TEXT = {
    Deferral.OUTSIDE_WINDOW: "outside the lead's send window",
    Deferral.MAILBOX_CAP: "the mailbox's daily cap is reached",
    Deferral.MAILBOX_SPACING: "the mailbox's minimum spacing",
    Deferral.CAMPAIGN_PAUSED: "the campaign is paused",
}


class _ContinueAsNew(Exception):
    """Unwinds the run loop to the one place that continues as new."""

    def __init__(self, resume: ResumePoint) -> None:
        self.resume = resume


@workflow.defn(name=WORKFLOW_TYPE)
class CampaignWorkflow:
    """One lead's run through a campaign snapshot: draft → approval gate → deliver → delay, per
    step.

    Started by the API with a `CampaignInput` under the workflow id of `campaign_engine.ids`.
    Signals (`approve`, `discard`, `lead_replied`, `lead_unsubscribed`, `stop`) only change state;
    the run loop acts on it. Queries: `lead_status`, `approval_outcome`. Once the history is
    long enough (Temporal's suggestion, or `continue_as_new_after_events`), the run continues as
    new at its gate, in its delay or between steps, carrying a `CarriedState`, so the status and
    the audit hold across runs.
    """

    @workflow.init
    def __init__(self, input: CampaignInput) -> None:
        self._input = input
        carried = input.carried
        self._phase = Phase.DRAFTING
        self._latest_step: str | None = carried.latest_step if carried else None
        self._stop_reason: StopReason | None = None
        self._failure: FailureRecord | None = None
        self._stop: StopRecord | None = None
        """A stop asked for by a signal or an expired gate; the run loop ends on it."""
        self._pending_content: DraftedContent | None = None
        self._gate_expires_at: datetime | None = None
        self._delay_until: datetime | None = None
        self._gate_decisions: list[GateDecision] = list(carried.gate_decisions) if carried else []
        self._deliveries: list[DeliveryRecord] = list(carried.deliveries) if carried else []
        # request id → (applied, refusal, gate id); dicts keep insertion order, so the first key
        # is oldest.
        self._approval_outcomes: dict[str, tuple[bool, ApprovalRefusal | None, str | None]] = {
            r.request_id: (r.applied, r.refusal, r.gate_id)
            for r in (carried.approval_outcomes if carried else [])
        }
        self._stray_signals = 0
        self._signal_input_problems: list[str] = []
        self._upserted: tuple[object, ...] | None = None
        self._gate_id: str | None = None
        """The open gate's opaque id (None when no gate is open); the API's ETag."""
        self._gate_opened_at: datetime | None = None
        self._last_gate: tuple[str, datetime, datetime | None] | None = None
        """The latest gate of this run (id, opened, expires), as indexed for the review queue."""
        self._index_gates: bool | None = None
        self._scheduled: ScheduledDelivery | None = None
        """Approved content waiting for its send time (phase `SCHEDULED`)."""
        self._campaign_paused: tuple[str, str] | None = (
            (carried.campaign_paused[0], carried.campaign_paused[1])
            if carried and carried.campaign_paused and len(carried.campaign_paused) == 2
            else None
        )
        """(when, by whom) as the `campaign_paused` signal said; None once resumed."""
        self._resumes = 0
        """`campaign_resumed` signals seen: a delivery held by a pause waits for this to move."""
        self._notices: list[asyncio.Task[None]] = []
        """Webhook notices under way; the run ends only once they are done (never blocked)."""

    # --- the run loop ---------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: CampaignInput) -> LeadStatus:
        """Runs the steps from where `input` resumes until the last is done or the instance
        stops or fails (or continues as new).

        Returns the final `LeadStatus` when completed or stopped. A failed instance raises a
        non-retryable `ApplicationError` whose `type` is the `StopReason` (`DRAFT_FAILED`,
        `DELIVERY_FAILED`) and whose details hold the `LeadStatus`.
        """
        workflow.upsert_search_attributes(
            [
                search_attributes.ACCOUNT_GROUP_ID.value_set(input.account_group_id),
                search_attributes.CAMPAIGN_ID.value_set(input.campaign_id),
                search_attributes.LEAD_ID.value_set(input.lead.id),
            ]
        )
        resume = input.carried.resume if input.carried else ResumePoint(step_index=0)
        steps = input.campaign.steps
        try:
            for index in range(resume.step_index, len(steps)):
                at = resume if index == resume.step_index else ResumePoint(step_index=index)
                if not await self._run_step(index, steps[index], at):
                    break
            else:
                self._set_phase(Phase.COMPLETED)
        except _ContinueAsNew as due:
            # Signal handlers are synchronous today; waiting keeps that from becoming a trap.
            await workflow.wait_condition(workflow.all_handlers_finished)
            await self._notices_done()
            self._continue_as_new(due.resume)
        await self._notices_done()
        if self._phase == Phase.FAILED:
            cause = f" — {self._failure.message}" if self._failure else ""
            raise ApplicationError(
                f"campaign instance failed at step {self._latest_step}: {self._stop_reason}{cause}",
                self._status(),
                type=self._stop_reason.value if self._stop_reason else None,
                non_retryable=True,
            )
        return self._status()

    async def _run_step(self, index: int, step: CampaignStep, at: ResumePoint) -> bool:
        """Runs one step from where `at` says; False when the instance ended during it."""
        self._latest_step = step.id
        if at.at != ResumeAt.DELAY and not await self._draft_gate_deliver(index, step, at):
            return False
        is_last = index == len(self._input.campaign.steps) - 1
        if not is_last and (step.delay_seconds > 0 or step.delay_business_days > 0):
            until = at.delay_until or await self._delay_end(step)
            if until is None or not await self._delay(index, step, until):
                return False
        if not is_last and self._continue_as_new_due():
            raise _ContinueAsNew(ResumePoint(step_index=index + 1))
        return True

    async def _draft_gate_deliver(self, index: int, step: CampaignStep, at: ResumePoint) -> bool:
        content = at.content
        if at.at == ResumeAt.DELIVERY:
            assert content is not None, "a run resumed for delivery carries its approved content"
            self._set_phase(Phase.DELIVERING)
            if not await self._deliver(index, content):
                return False
            return not self._end_if_stop_requested()
        if at.at == ResumeAt.START:
            self._set_phase(Phase.DRAFTING)
            content = await self._draft(step)
            if content is None or self._end_if_stop_requested():
                return False
        assert content is not None, "a run resumed at a gate carries its drafted content"
        if step.requires_approval:
            expires_at = at.gate_expires_at if at.at == ResumeAt.GATE else self._gate_deadline()
            # Reviewers were told when the gate first opened, not again after continue-as-new.
            notify = at.at == ResumeAt.START
            if at.at == ResumeAt.GATE and at.gate_id:
                gate = (at.gate_id, at.gate_opened_at or workflow.now())
            else:
                # Deterministic (the workflow's seeded random), unique per gate, opaque.
                gate = (workflow.uuid4().hex, workflow.now())
            if not await self._await_approval(index, step, content, expires_at, notify, gate):
                return False
        if self._end_if_stop_requested():
            return False
        self._set_phase(Phase.DELIVERING)
        if not await self._deliver(index, content):
            return False
        # A stop that arrived during delivery waited for it; it takes effect now.
        return not self._end_if_stop_requested()

    def _gate_deadline(self) -> datetime | None:
        timeout = self._input.campaign.approval_timeout_seconds
        return workflow.now() + timedelta(seconds=timeout) if timeout else None

    async def _await_approval(
        self,
        index: int,
        step: CampaignStep,
        content: DraftedContent,
        expires_at: datetime | None,
        notify: bool,
        gate: tuple[str, datetime],
    ) -> bool:
        gate_id, opened_at = gate
        self._pending_content = content
        self._gate_expires_at = expires_at
        self._gate_id = gate_id
        self._gate_opened_at = opened_at
        self._last_gate = (gate_id, opened_at, expires_at)
        self._set_phase(Phase.AWAITING_APPROVAL)
        events = workflow.patched(APPROVAL_EVENTS)
        if notify:
            _metric_gates_opened().add(1)
        notice = (
            self._notify_reviewers(step, expires_at, gate_id, notify, events)
            if notify or events
            else None
        )
        try:
            await workflow.wait_condition(
                lambda: (
                    self._phase != Phase.AWAITING_APPROVAL
                    or self._stop is not None
                    or self._continue_as_new_due()
                ),
                timeout=_until(expires_at) if expires_at else None,
                timeout_summary=f"approval of {step.id} expires",
            )
        except TimeoutError:
            self._request_stop(StopReason.APPROVAL_EXPIRED, "system", "no approval in time")
        finally:
            if notice is not None and not notice.done():
                notice.cancel()
        if self._phase == Phase.AWAITING_APPROVAL and self._stop is None:
            raise _ContinueAsNew(
                ResumePoint(
                    index,
                    at=ResumeAt.GATE,
                    content=content,
                    gate_expires_at=expires_at,
                    gate_id=gate_id,
                    gate_opened_at=opened_at,
                )
            )
        resolution, decided_by, decided_at = self._resolution(gate_id)
        _metric_gates_resolved().add(1, {"outcome": resolution})
        _metric_gate_decision_seconds().record(
            max((decided_at - opened_at).total_seconds(), 0.0), {"outcome": resolution}
        )
        if events and self._input.campaign.webhook_url:
            resolved = self._notice(step, expires_at, gate_id, ApprovalEvent.RESOLVED)
            resolved.resolution = resolution
            resolved.decided_by = decided_by
            resolved.decided_at = decided_at
            # Beside the delivery, never in its way; the run ends only once it is done.
            self._notices.append(asyncio.create_task(self._send_notice(resolved)))
        # Approved: the `approve` signal closed the gate (so the query after it sees it closed).
        return not self._end_if_stop_requested()

    def _resolution(self, gate_id: str) -> tuple[str, str, datetime]:
        """How the gate just left was resolved: (approved | discarded | expired | stopped, who,
        when). Records the expiry in the audit record (`Decision.EXPIRED`; state only)."""
        last = self._gate_decisions[-1] if self._gate_decisions else None
        if self._stop is None or (
            last is not None and last.gate_id == gate_id and last.decision == Decision.APPROVED
        ):
            assert last is not None, "a gate left without a stop was approved"
            return Decision.APPROVED.value, last.decided_by, last.decided_at
        stop = self._stop
        if stop.reason == StopReason.APPROVAL_EXPIRED:
            assert self._latest_step is not None
            self._gate_decisions.append(
                GateDecision(
                    step_id=self._latest_step,
                    decision=Decision.EXPIRED,
                    decided_by=stop.decided_by,
                    decided_at=stop.stopped_at,
                    request_id="",
                    gate_id=gate_id,
                )
            )
            return Decision.EXPIRED.value, stop.decided_by, stop.stopped_at
        if stop.reason == StopReason.CONTENT_DISCARDED:
            return Decision.DISCARDED.value, stop.decided_by, stop.stopped_at
        return "stopped", stop.decided_by, stop.stopped_at

    async def _delay(self, index: int, step: CampaignStep, until: datetime) -> bool:
        self._delay_until = until
        self._set_phase(Phase.DELAYING)
        try:
            await workflow.wait_condition(
                lambda: self._stop is not None or self._continue_as_new_due(),
                timeout=_until(until),
                timeout_summary=f"delay after {step.id}",
            )
        except TimeoutError:
            self._delay_until = None
            return True
        if self._end_if_stop_requested():
            return False
        raise _ContinueAsNew(ResumePoint(index, at=ResumeAt.DELAY, delay_until=until))

    async def _delay_end(self, step: CampaignStep) -> datetime | None:
        """When the delay after `step` ends: `delay_seconds` of workflow time, or the same local
        time `delay_business_days` sending days later (an activity: the calendar and the time
        zone database are not deterministic inputs). None when that calculation failed for good
        (`options.BUSINESS_DAYS`): the instance has ended `failed` / `DELAY_FAILED`."""
        if step.delay_business_days <= 0:
            return workflow.now() + timedelta(seconds=step.delay_seconds)
        try:
            later: BusinessDaysResult = await workflow.execute_activity(
                BUSINESS_DAYS_LATER_ACTIVITY,
                BusinessDaysRequest(
                    at=workflow.now(),
                    days=step.delay_business_days,
                    send_window=self._input.campaign.send_window,
                    lead_time_zone=self._input.lead.time_zone,
                ),
                result_type=BusinessDaysResult,
                start_to_close_timeout=options.BUSINESS_DAYS.start_to_close,
                retry_policy=options.BUSINESS_DAYS.retry,
                summary=f"{step.delay_business_days} business days after {step.id}",
            )
        except ActivityError as error:
            if not workflow.patched(DELAY_FAILED_PATCH):
                raise
            # The next send time cannot be known (an unusable window or zone in an older
            # snapshot, or a calculation that failed every attempt): nothing more is sent.
            self._failure = _failure_of(step.id, error)
            self._end(Phase.FAILED, StopReason.DELAY_FAILED)
            return None
        return later.until

    # --- activities -----------------------------------------------------------------------------

    async def _draft(self, step: CampaignStep) -> DraftedContent | None:
        try:
            content: DraftedContent = await workflow.execute_activity(
                DRAFT_CONTENT_ACTIVITY,
                DraftRequest(step, self._input.lead),
                result_type=DraftedContent,
                start_to_close_timeout=options.DRAFT.start_to_close,
                heartbeat_timeout=options.DRAFT.heartbeat,
                retry_policy=options.DRAFT.retry,
                summary=f"draft {step.id}",
            )
        except ActivityError as error:
            self._failure = _failure_of(step.id, error)
            self._end(Phase.FAILED, StopReason.DRAFT_FAILED)
            return None
        return content

    async def _deliver(self, index: int, content: DraftedContent) -> bool:
        """Delivers; False when the instance failed. A stop that arrives meanwhile cancels the
        delivery, which sends nothing unless it was already handing the message over; either
        way the caller then ends the instance as stopped. A delivery refused because the lead is
        suppressed (`LeadSuppressed`, non-retryable) is such a stop: `LEAD_UNSUBSCRIBED`.

        A delivery the activity defers (outside the send window, over the mailbox's cap or
        spacing, the campaign paused) waits in phase `SCHEDULED` until its `send_at`, or the
        campaign's resume, and is tried again; a stop meanwhile releases its mailbox slot."""
        while True:
            resumes = self._resumes
            attempt = await self._attempt_delivery(content)
            if isinstance(attempt, bool):
                return attempt
            if attempt.outcome != DeliveryOutcome.DEFERRED:
                self._scheduled = None
                self._record_delivery(content, attempt)
                return True
            if attempt.deferred_because == Deferral.CAMPAIGN_PAUSED and self._resumes != resumes:
                continue  # resumed while the activity found it paused: ask again at once
            self._defer(content, attempt)
            if not await self._wait_for_send_time(index, content, attempt, resumes):
                return True
            self._set_phase(Phase.DELIVERING)

    def _defer(self, content: DraftedContent, receipt: DeliveryReceipt) -> None:
        reason = receipt.deferred_because or Deferral.OUTSIDE_WINDOW
        previous = self._scheduled
        self._scheduled = ScheduledDelivery(
            step_id=content.step_id,
            deferred_because=reason,
            send_at=receipt.send_at,
            send_at_local=receipt.send_at_local,
            deferrals=(previous.deferrals + 1 if previous else 1),
        )
        _metric_deliveries_deferred().add(1, {"reason": reason.value})
        self._set_phase(Phase.SCHEDULED)

    async def _wait_for_send_time(
        self, index: int, content: DraftedContent, receipt: DeliveryReceipt, resumes: int
    ) -> bool:
        """Waits until the deferred delivery may be tried again; False when a stop came first
        (its mailbox slot, if any, is released: the cap counts sends, not the stopped)."""
        paused = receipt.send_at is None
        try:
            await workflow.wait_condition(
                lambda: (
                    self._stop is not None
                    or self._continue_as_new_due()
                    or (paused and self._resumes != resumes)
                ),
                timeout=PAUSE_RECHECK if receipt.send_at is None else _until(receipt.send_at),
                timeout_summary=(
                    f"deliver {content.step_id} on resume"
                    if paused
                    else f"deliver {content.step_id} at {receipt.send_at_local or receipt.send_at}"
                ),
            )
        except TimeoutError:
            return True
        if self._stop is not None:
            if receipt.slot_reserved:
                try:
                    await workflow.execute_activity(
                        RELEASE_SEND_SLOT_ACTIVITY,
                        receipt.message_id,
                        start_to_close_timeout=options.RELEASE_SEND_SLOT.start_to_close,
                        retry_policy=options.RELEASE_SEND_SLOT.retry,
                        summary=f"release the mailbox slot of {content.step_id}",
                    )
                except ActivityError as error:
                    # A slot left behind only counts against the mailbox's cap that day; the
                    # stop is not held up by it.
                    workflow.logger.warning(
                        "mailbox slot of %s not released: %s", receipt.message_id, error.cause
                    )
            self._scheduled = None
            return False
        if paused and self._resumes != resumes:
            return True
        raise _ContinueAsNew(ResumePoint(index, at=ResumeAt.DELIVERY, content=content))

    async def _attempt_delivery(self, content: DraftedContent) -> DeliveryReceipt | bool:
        """One run of the delivery activity: its receipt (sent, or deferred), or what `_deliver`
        returns when it ended otherwise (True: a stop; False: failed)."""
        delivery = workflow.start_activity(
            DELIVER_MESSAGE_ACTIVITY,
            DeliveryRequest(
                workflow.info().workflow_id,
                self._input.lead,
                content,
                send_window=self._input.campaign.send_window,
                mailbox=self._input.campaign.mailbox,
                not_before=workflow.now(),
            ),
            result_type=DeliveryReceipt,
            # The activity heartbeats from its start, so a dead worker is noticed in seconds.
            start_to_close_timeout=options.DELIVERY.start_to_close,
            heartbeat_timeout=options.DELIVERY.heartbeat,
            retry_policy=options.DELIVERY.retry,
            # Never abandoned half-way: a cancelled delivery is waited for, and the activity
            # itself decides whether it was too late to stop (see `deliver_message`).
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary=f"deliver {content.step_id}",
        )
        await workflow.wait_condition(lambda: delivery.done() or self._stop is not None)
        cancelled = False
        if not delivery.done() and workflow.patched(CANCEL_DELIVERY_ON_STOP):
            delivery.cancel()
            cancelled = True
        try:
            receipt: DeliveryReceipt = await delivery
        except ActivityError as error:
            if cancelled:
                # Stopped before it was sent (or the last attempt failed): the stop ends it.
                return True
            cause = error.cause
            if (
                isinstance(cause, ApplicationError)
                and cause.type == ActivityErrorType.LEAD_SUPPRESSED.value
            ):
                # The lead unsubscribed (its suppression was read right before the hand-over):
                # nothing was sent, and the instance stops as an unsubscribe would stop it.
                self._request_stop(StopReason.LEAD_UNSUBSCRIBED, "suppression list", cause.message)
                return True
            self._failure = _failure_of(content.step_id, error)
            self._end(Phase.FAILED, StopReason.DELIVERY_FAILED)
            return False
        return receipt

    def _record_delivery(self, content: DraftedContent, receipt: DeliveryReceipt) -> None:
        self._deliveries.append(
            DeliveryRecord(content.step_id, receipt.message_id, receipt.outcome, workflow.now())
        )
        if receipt.outcome == DeliveryOutcome.IN_DOUBT:
            workflow.logger.warning(
                "delivery of %s is in doubt: an attempt died while handing it over",
                receipt.message_id,
            )

    def _notice(
        self, step: CampaignStep, expires_at: datetime | None, gate_id: str, event: ApprovalEvent
    ) -> PendingApprovalNotice:
        return PendingApprovalNotice(
            account_group_id=self._input.account_group_id,
            campaign_id=self._input.campaign_id,
            workflow_instance_id=self._input.workflow_instance_id,
            lead_id=self._input.lead.id,
            step_id=step.id,
            webhook_url=self._input.campaign.webhook_url or "",
            expires_at=expires_at,
            event=event.value,
            gate_id=gate_id,
        )

    def _notify_reviewers(
        self,
        step: CampaignStep,
        expires_at: datetime | None,
        gate_id: str,
        pending: bool,
        events: bool,
    ) -> asyncio.Task[None] | None:
        """The gate's notices, one after another in one task beside the gate (so they arrive in
        order): `approval.pending` when the gate has just opened, then, for gates opened after
        the `approval-events` patch, each `approval.reminder` at its time before expiry that
        is still ahead. Cancelled when the gate is resolved."""
        if not self._input.campaign.webhook_url:
            return None
        notice = self._notice(step, expires_at, gate_id, ApprovalEvent.PENDING)
        if not events:
            # Recorded before gate ids: today's notice exactly.
            notice.gate_id = None
        reminders = (
            sorted(set(self._input.campaign.approval_reminder_seconds), reverse=True)
            if events and expires_at is not None
            else []
        )
        return asyncio.create_task(
            self._send_gate_notices(
                step, expires_at, gate_id, notice if pending else None, reminders
            )
        )

    async def _send_gate_notices(
        self,
        step: CampaignStep,
        expires_at: datetime | None,
        gate_id: str,
        pending: PendingApprovalNotice | None,
        reminders: list[float],
    ) -> None:
        if pending is not None:
            await self._send_notice(pending)
        for before in reminders:
            assert expires_at is not None
            due = expires_at - timedelta(seconds=before)
            if due <= workflow.now():
                continue  # already past (e.g. a reminder longer than the timeout)
            try:
                await workflow.sleep(due - workflow.now(), summary=f"remind reviewers of {step.id}")
            except asyncio.CancelledError:
                return
            reminder = self._notice(step, expires_at, gate_id, ApprovalEvent.REMINDER)
            reminder.reminder_seconds = before
            await self._send_notice(reminder)

    async def _notices_done(self) -> None:
        if not all(task.done() for task in self._notices):
            await workflow.wait_condition(lambda: all(task.done() for task in self._notices))

    async def _send_notice(self, notice: PendingApprovalNotice) -> None:
        # Runs beside the gate, never in its way: failures are logged and the gate stays open.
        try:
            await workflow.execute_activity(
                NOTIFY_PENDING_APPROVAL_ACTIVITY,
                notice,
                start_to_close_timeout=options.NOTIFY.start_to_close,
                retry_policy=options.NOTIFY.retry,
                summary=(
                    f"notify reviewers of {notice.step_id}"
                    if notice.event == ApprovalEvent.PENDING
                    else f"{notice.event} of {notice.step_id}"
                ),
            )
        except ActivityError as error:
            if not isinstance(error.cause, CancelledError):
                workflow.logger.warning("pending-approval webhook gave up: %s", error.cause)
        except asyncio.CancelledError:
            pass

    # --- state ----------------------------------------------------------------------------------

    def _set_phase(self, phase: Phase) -> None:
        self._phase = phase
        pending, status = phase == Phase.AWAITING_APPROVAL, _STATUS_OF_PHASE[phase]
        if self._index_gates is None:
            self._index_gates = workflow.patched(GATE_SEARCH_ATTRIBUTES)
        indexed: tuple[object, ...] = (pending, status)
        if self._index_gates:
            indexed += (self._latest_step, self._last_gate)
        if indexed != self._upserted:
            # Only on change: each upsert is a history event.
            self._upserted = indexed
            updates: list[SearchAttributeUpdate[Any]] = [
                search_attributes.HAS_PENDING_APPROVAL.value_set(pending),
                search_attributes.LEAD_WORKFLOW_STATUS.value_set(status.value),
            ]
            if self._index_gates and self._latest_step is not None:
                updates.append(search_attributes.LATEST_STEP.value_set(self._latest_step))
            if self._index_gates and self._last_gate is not None:
                gate_id, opened_at, expires_at = self._last_gate
                updates.append(search_attributes.GATE_ID.value_set(gate_id))
                updates.append(search_attributes.GATE_OPENED_AT.value_set(opened_at))
                if expires_at is not None:
                    updates.append(search_attributes.GATE_EXPIRES_AT.value_set(expires_at))
            workflow.upsert_search_attributes(updates)
        workflow.set_current_details(self._details())

    def _request_stop(self, reason: StopReason, by: str, note: str) -> None:
        if self._stop is None and self._phase not in _CLOSED_PHASES:
            self._stop = StopRecord(reason, by, workflow.now(), note)

    def _end_if_stop_requested(self) -> bool:
        if self._stop is None:
            return False
        if self._stop.reason == StopReason.CONTENT_DISCARDED and self._latest_step is not None:
            self._gate_decisions.append(
                GateDecision(
                    step_id=self._latest_step,
                    decision=Decision.DISCARDED,
                    decided_by=self._stop.decided_by,
                    decided_at=self._stop.stopped_at,
                    request_id="",
                    gate_id=self._gate_id,
                )
            )
        self._end(Phase.STOPPED, self._stop.reason)
        return True

    def _end(self, phase: Phase, reason: StopReason | None) -> None:
        self._stop_reason = reason
        self._pending_content = None
        self._gate_expires_at = None
        self._gate_id = None
        self._gate_opened_at = None
        self._delay_until = None
        self._scheduled = None
        self._set_phase(phase)

    def _continue_as_new_due(self) -> bool:
        info = workflow.info()
        limit = self._input.continue_as_new_after_events
        if limit is not None and info.get_current_history_length() >= limit:
            return True
        return info.is_continue_as_new_suggested()

    def _continue_as_new(self, resume: ResumePoint) -> NoReturn:
        carried = CarriedState(
            resume=resume,
            latest_step=self._latest_step,
            gate_decisions=self._gate_decisions,
            approval_outcomes=[
                ApprovalOutcomeRecord(request_id, applied, refusal, gate_id)
                for request_id, (applied, refusal, gate_id) in self._approval_outcomes.items()
            ],
            runs=(self._input.carried.runs + 1) if self._input.carried else 2,
            deliveries=self._deliveries,
            campaign_paused=list(self._campaign_paused) if self._campaign_paused else None,
        )
        workflow.logger.info("continuing as new (run %d) at %s", carried.runs, resume)
        workflow.continue_as_new(
            CampaignInput(
                account_group_id=self._input.account_group_id,
                campaign_id=self._input.campaign_id,
                workflow_instance_id=self._input.workflow_instance_id,
                lead=self._input.lead,
                campaign=self._input.campaign,
                carried=carried,
                continue_as_new_after_events=self._input.continue_as_new_after_events,
            )
        )

    # --- signals: they only change state; the run loop acts on it --------------------------------

    @workflow.signal
    def approve(self, *inputs: object) -> None:
        """Clears the open gate; refused (and recorded as such) when none is open.

        Input: `ApproveRequest` as an object (`request_id`, `decided_by`, `if_match`); see
        `_decode`. With `if_match` (the HTTP `If-Match` tags, RFC 9110 §13.1.1) it applies only
        when the open gate's id is one named, or `*` is named and a gate is open; otherwise it
        is refused `GATE_CHANGED` (a closed instance stays `WORKFLOW_CLOSED`). The check and
        the approval are one step of the workflow, so no gate can open between them.
        """
        request = self._decode("approve", ApproveRequest, inputs, text_field="decided_by")
        refusal: ApprovalRefusal | None = None
        approved_gate = self._gate_id
        condition = request.if_match
        gate_named = condition is not None and (
            (ANY_GATE in condition and self._phase == Phase.AWAITING_APPROVAL)
            or (self._gate_id is not None and self._gate_id in condition)
        )
        if self._phase in _CLOSED_PHASES or self._stop is not None:
            refusal = ApprovalRefusal.WORKFLOW_CLOSED
        elif condition is not None and not gate_named and ANY_GATE not in condition:
            refusal = ApprovalRefusal.GATE_CHANGED
        elif self._phase != Phase.AWAITING_APPROVAL:
            already = self._gate_decisions and self._gate_decisions[-1].step_id == self._latest_step
            refusal = ApprovalRefusal.ALREADY_APPROVED if already else ApprovalRefusal.NO_GATE_OPEN
        else:
            assert self._latest_step is not None
            self._gate_decisions.append(
                GateDecision(
                    step_id=self._latest_step,
                    decision=Decision.APPROVED,
                    decided_by=request.decided_by,
                    decided_at=workflow.now(),
                    request_id=request.request_id,
                    gate_id=self._gate_id,
                )
            )
            # The gate closes here, not in the run loop, so the query that follows this
            # signal already reports it as applied.
            self._pending_content = None
            self._gate_expires_at = None
            self._gate_id = None
            self._gate_opened_at = None
            self._set_phase(Phase.DELIVERING)
        if request.request_id:
            self._record_outcome(
                request.request_id, refusal, approved_gate if refusal is None else None
            )

    @workflow.signal
    def discard(self, *inputs: object) -> None:
        """Operator-only: discard the content (pending or being drafted) and stop.

        Input: nothing, a note as a string, or `{"decided_by", "note"}`.
        """
        request = self._decode("discard", DiscardRequest, inputs, text_field="note")
        self._request_stop(StopReason.CONTENT_DISCARDED, request.decided_by, request.note)

    @workflow.signal
    def lead_replied(self, *inputs: object) -> None:
        """Operator-only: the lead replied; nothing more is sent.

        Input: nothing, a note as a string, or `{"decided_by", "note"}`.
        """
        event = self._decode("lead_replied", LeadEvent, inputs, text_field="note")
        self._request_stop(StopReason.LEAD_REPLIED, event.decided_by, event.note)

    @workflow.signal
    def lead_unsubscribed(self, *inputs: object) -> None:
        """Operator-only: the lead unsubscribed; nothing more is sent.

        Input: nothing, a note as a string, or `{"decided_by", "note"}`.
        """
        event = self._decode("lead_unsubscribed", LeadEvent, inputs, text_field="note")
        self._request_stop(StopReason.LEAD_UNSUBSCRIBED, event.decided_by, event.note)

    @workflow.signal
    def stop(self, *inputs: object) -> None:
        """Operator-only: stop the instance, with the operator's reason.

        Input: nothing, the reason as a string, or `{"reason", "decided_by"}`.
        """
        request = self._decode("stop", StopRequest, inputs, text_field="reason")
        self._request_stop(StopReason.STOPPED_BY_OPERATOR, request.decided_by, request.reason)

    @workflow.signal
    def campaign_paused(self, *inputs: object) -> None:
        """The campaign was paused (the API's pause sends this to every running instance in one
        batch): shown in the status and the UI's details. What holds a delivery back is the
        store's pause flag, read right before each hand-over, not this signal.

        Input: `CampaignPauseEvent` as an object (`decided_by`, `at`), or who as a string.
        """
        event = self._decode("campaign_paused", CampaignPauseEvent, inputs, text_field="decided_by")
        at = event.at
        try:
            datetime.fromisoformat(at)
        except ValueError:
            # Not a time (an operator's typing): the signal still applies, at the workflow's now.
            at = ""
        self._campaign_paused = (at or workflow.now().isoformat(), event.decided_by)
        workflow.set_current_details(self._details())

    @workflow.signal
    def campaign_resumed(self, *inputs: object) -> None:
        """The campaign was resumed: a delivery held by the pause is tried again at once (and
        takes its mailbox slot like any other).

        Input: `CampaignPauseEvent` as an object (`decided_by`, `at`), or who as a string.
        """
        self._decode("campaign_resumed", CampaignPauseEvent, inputs, text_field="decided_by")
        self._campaign_paused = None
        self._resumes += 1
        workflow.set_current_details(self._details())

    def _decode(
        self, signal: str, cls: type[_Input], inputs: tuple[object, ...], *, text_field: str
    ) -> _Input:
        """A signal's input, decoded leniently (`workflows.signal_inputs`); never drops it.

        What had to be ignored is logged as a warning naming the workflow id, counted in the
        `campaign_signal_input_problems` metric and shown in the UI's current details.
        """
        decoded = signal_inputs.decode(
            cls,
            inputs,
            text_field=text_field,
            aliases=_WHO_ALIASES,
            max_chars=_FIELD_LIMITS,
            list_fields={"if_match": MAX_IF_MATCH_TAGS},
        )
        if decoded.problems:
            summary = "; ".join(decoded.problems)
            workflow.logger.warning(
                "signal %s on %s: input partly not understood: %s",
                signal,
                workflow.info().workflow_id,
                summary,
            )
            workflow.metric_meter().create_counter(
                "campaign_signal_input_problems",
                "Signals whose input was partly not understood (the signal still applied).",
            ).add(1, {"signal": signal})
            self._signal_input_problems = [
                *self._signal_input_problems[-(SIGNAL_INPUT_PROBLEMS_KEPT - 1) :],
                f"`{signal}` at {workflow.now().isoformat(timespec='seconds')}: {summary}",
            ]
            workflow.set_current_details(self._details())
        return decoded.value

    @workflow.signal(dynamic=True)
    def stray_signal(self, name: str, args: Sequence[RawValue]) -> None:
        """Signals of any other name: ignored, the first ten of a run logged as warnings."""
        # Without this, signals of unknown names would be buffered in memory for the whole run.
        self._stray_signals += 1
        if self._stray_signals <= 10:
            workflow.logger.warning("ignored unknown signal %r", name)

    def _record_outcome(
        self, request_id: str, refusal: ApprovalRefusal | None, gate_id: str | None
    ) -> None:
        self._approval_outcomes.pop(request_id, None)
        self._approval_outcomes[request_id] = (refusal is None, refusal, gate_id)
        while len(self._approval_outcomes) > APPROVAL_OUTCOMES_KEPT:
            del self._approval_outcomes[next(iter(self._approval_outcomes))]

    # --- queries: they only read ----------------------------------------------------------------

    @workflow.query
    def lead_status(self) -> LeadStatus:
        """The instance's status, its pending content and its audit, as `LeadStatus`."""
        return self._status()

    @workflow.query
    def approval_outcome(self, request: ApprovalOutcomeRequest) -> ApprovalOutcome:
        """The outcome of one approve signal, with the lead status it left behind."""
        applied, refusal, gate_id = self._approval_outcomes.get(
            request.request_id, (None, None, None)
        )
        return ApprovalOutcome(request.request_id, applied, refusal, self._status(), gate_id)

    def _status(self) -> LeadStatus:
        return LeadStatus(
            lead_id=self._input.lead.id,
            workflow_status=_STATUS_OF_PHASE[self._phase],
            workflow_instance_id=self._input.workflow_instance_id,
            latest_step=self._latest_step,
            workflow_stop_reason=self._stop_reason,
            has_pending_approval=self._phase == Phase.AWAITING_APPROVAL,
            pending_content=self._pending_content,
            gate_expires_at=self._gate_expires_at,
            gate_id=self._gate_id,
            gate_opened_at=self._gate_opened_at,
            gate_decisions=list(self._gate_decisions),
            stop=self._stop if self._phase == Phase.STOPPED else None,
            signal_input_problems=list(self._signal_input_problems),
            deliveries=list(self._deliveries),
            failure=self._failure,
            scheduled=self._scheduled,
            campaign_paused_at=(
                datetime.fromisoformat(self._campaign_paused[0]) if self._campaign_paused else None
            ),
        )

    def _details(self) -> str:
        """The UI's "current details": what this instance is doing or waiting for, in Markdown.

        Signal inputs that were partly not understood follow, newest last, so an operator who
        sent one sees it where they look.
        """
        details = self._phase_details()
        in_doubt = [d for d in self._deliveries if d.outcome == DeliveryOutcome.IN_DOUBT]
        if in_doubt:
            listed = ", ".join(f"`{d.step_id}` ({d.message_id})" for d in in_doubt)
            details += (
                f"\n\n**Delivery in doubt**: {listed} — an attempt died while handing the message "
                "over; it was not sent again and may not have arrived."
            )
        if self._campaign_paused is not None and self._phase not in _CLOSED_PHASES:
            at, by = self._campaign_paused
            details += (
                f"\n\n**Campaign paused** since {at} by {by}: gates stay approvable, nothing is "
                "sent until it is resumed."
            )
        if self._signal_input_problems:
            listed = "\n".join(f"- {problem}" for problem in self._signal_input_problems)
            details += f"\n\n**Signal input not understood** (the signal still applied):\n{listed}"
        return details

    def _phase_details(self) -> str:
        step = f"`{self._latest_step}`" if self._latest_step else "the first step"
        if self._phase == Phase.AWAITING_APPROVAL and self._pending_content is not None:
            body = self._pending_content.body
            excerpt = body if len(body) <= EXCERPT_CHARS else body[:EXCERPT_CHARS] + "…"
            expires = (
                f"**Expires** {self._gate_expires_at.isoformat()}"
                if self._gate_expires_at
                else "**Expires** never"
            )
            quoted = "\n".join(f"> {line}" for line in excerpt.splitlines() or [""])
            return (
                f"**Waiting for approval** of step {step}\n\n"
                f"**Subject** {self._pending_content.subject}\n\n{quoted}\n\n{expires}"
            )
        if self._phase == Phase.SCHEDULED and self._scheduled is not None:
            scheduled = self._scheduled
            reason = _DEFERRAL_TEXT[scheduled.deferred_because]
            if scheduled.send_at is None:
                return f"**Approved**, step {step}: held — {reason}; sends when it is resumed"
            when = scheduled.send_at_local or scheduled.send_at.isoformat()
            return f"**Approved**, step {step}: sends at {when} — {reason}"
        if self._phase == Phase.DELAYING and self._delay_until is not None:
            return f"**Waiting** after step {step} until {self._delay_until.isoformat()}"
        if self._phase == Phase.STOPPED and self._stop is not None:
            note = f" — {self._stop.note}" if self._stop.note else ""
            by = self._stop.decided_by
            return f"**Stopped** at step {step}: `{self._stop.reason}` by {by}{note}"
        if self._phase in _CLOSED_PHASES:
            reason = f": `{self._stop_reason}`" if self._stop_reason else ""
            if self._failure is not None:
                reason += f" — {self._failure.message}"
            return f"**{self._phase.value.capitalize()}** at step {step}{reason}"
        return f"**{self._phase.value.capitalize()}** step {step}"
