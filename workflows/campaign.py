"""The per-lead campaign workflow: draft → approval gate → deliver → delay, step after step.

The class orchestrates: the run loop, the signal and query handlers, and the `workflow.*` calls
(activities, timers, search attributes, metrics). What it knows is one `CampaignState`, changed
only through `workflows.state`; how it reads is `workflows.status`; its webhook notices are built
by `workflows.notices`; its search attributes by `workflows.search_attributes`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import NoReturn, TypeVar

from temporalio import workflow
from temporalio.common import MetricCounter, MetricHistogramFloat, RawValue
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    # Pure modules without state of their own: shared with the sandbox rather than re-imported
    # (and kept again) for every instance; tests/test_workflow_state.py checks they read no clock.
    # `import workflows.x as x`, not `from workflows import x`: the sandbox has its own copy of
    # the `workflows` package, and a submodule reached through it is imported afresh per instance
    # (measured: +29 KB a cached instance) instead of passed through.
    import workflows.activity_options as options
    import workflows.notices as notices
    import workflows.search_attributes as search_attributes
    import workflows.signal_inputs as signal_inputs
    import workflows.state as state
    import workflows.status as status
    import workflows.versions as versions
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
        ApprovalOutcomeRequest,
        ApproveRequest,
        BusinessDaysRequest,
        BusinessDaysResult,
        CampaignInput,
        CampaignPauseEvent,
        CampaignStep,
        Deferral,
        DeliveryOutcome,
        DeliveryReceipt,
        DeliveryRequest,
        DiscardRequest,
        DraftedContent,
        DraftRequest,
        FailureRecord,
        Gate,
        InboundEvent,
        InboundKind,
        LeadEvent,
        LeadStatus,
        PendingApprovalNotice,
        Phase,
        ResumeAt,
        StopReason,
        StopRequest,
    )
    from workflows.versions import (
        APPROVAL_EVENTS,
        CANCEL_AS_STOP,
        CANCEL_DELIVERY_ON_STOP,
        CARRY_NOTICES,
        GATE_SEARCH_ATTRIBUTES,
        OUT_OF_OFFICE_HOLD,
    )

# Kept here for the callers that imported them from this module.
DELIVERY_MAX_ATTEMPTS = options.DELIVERY_MAX_ATTEMPTS
APPROVAL_OUTCOMES_KEPT = state.APPROVAL_OUTCOMES_KEPT
SIGNAL_INPUT_PROBLEMS_KEPT = state.SIGNAL_INPUT_PROBLEMS_KEPT
ANY_GATE = state.ANY_GATE
# What a signal brings into the state (which is carried over continue-as-new) is bounded, so the
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
    "inbound_message_id": MAX_REQUEST_ID_CHARS,
    "kind": MAX_REQUEST_ID_CHARS,
    "received_at": MAX_REQUEST_ID_CHARS,
    "return_date": MAX_REQUEST_ID_CHARS,
    "excerpt": state.MAX_EXCERPT_CHARS,
}
# Older spellings of "who", accepted from operators' scripts and replayed from old histories.
_WHO_ALIASES = {
    name: "decided_by"
    for name in ("by", "approved_by", "discarded_by", "reported_by", "stopped_by")
}
_Input = TypeVar("_Input")
# The strict payload codec's mark on an input nobody encrypted with the deployment's payload keys
# (`campaign_engine.codec.PLAINTEXT_ENCODING` and `METADATA_PLAINTEXT_ENCODING`: this package
# imports nothing of ours; tests/test_codec.py checks they agree). Signal inputs so marked arrive
# as a RawValue of the marked payload.
PLAINTEXT_ENCODING = b"binary/plaintext-unverified"
PLAINTEXT_ORIGINAL_ENCODING = "plaintext-encoding"


def is_unverified(value: object) -> bool:
    """True for a signal input the strict payload codec marked: nobody with a payload key
    encrypted it (an operator's plain `temporal workflow signal`, or anyone reaching Temporal)."""
    return (
        isinstance(value, RawValue) and value.payload.metadata.get("encoding") == PLAINTEXT_ENCODING
    )


def _value_of_unverified(raw: RawValue) -> object:
    """The JSON value of a marked input, as the operator typed it; its raw bytes (which the
    lenient signal decoding reports as not understood) when it is not JSON."""
    payload = type(raw.payload)()
    payload.CopyFrom(raw.payload)
    original = payload.metadata.get(PLAINTEXT_ORIGINAL_ENCODING, b"")
    for name in (PLAINTEXT_ORIGINAL_ENCODING, "plaintext-reason", "encoding"):
        if name in payload.metadata:
            del payload.metadata[name]
    if original:
        payload.metadata["encoding"] = original
    try:
        return workflow.payload_converter().from_payload(payload)
    except Exception:
        return payload.data


PAUSE_RECHECK = timedelta(hours=1)
"""How long a delivery held by a paused campaign waits before asking the store again, should the
`campaign_resumed` signal have missed it (the resume's batch signal normally wakes it at once)."""


def _failure_of(step_id: str, error: ActivityError) -> FailureRecord:
    """What the activity reported last: its error type, message and attempt number."""
    cause = error.cause
    if isinstance(cause, ApplicationError):
        details = cause.details
        attempt = details[0] if details and isinstance(details[0], int) else None
        return FailureRecord(step_id, cause.type, cause.message, attempt)
    return FailureRecord(step_id, None, str(cause or error))


def _is_aware_time(text: str) -> bool:
    try:
        return datetime.fromisoformat(text).tzinfo is not None
    except ValueError:
        return False


def _until(deadline: datetime) -> timedelta:
    """Time left until `deadline`; at least a millisecond, as a zero timeout means "none"."""
    return max(deadline - workflow.now(), timedelta(milliseconds=1))


def _metric_deliveries_deferred() -> MetricCounter:
    return workflow.metric_meter().create_counter(
        "campaign_deliveries_deferred",
        "Deliveries put off, by `reason`: outside_window, mailbox_cap, mailbox_spacing, "
        "campaign_paused, out_of_office.",
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


@workflow.defn(name=WORKFLOW_TYPE)
class CampaignWorkflow:
    """One lead's run through a campaign snapshot: draft → approval gate → deliver → delay, per
    step.

    Started by the API with a `CampaignInput` under the workflow id of `campaign_engine.ids`.
    Signals (`approve`, `discard`, `lead_replied`, `lead_unsubscribed`, `stop`,
    `inbound_message`, `campaign_paused`, `campaign_resumed`) only change the state; the run
    loop acts on it. Queries: `lead_status`, `approval_outcome`. Once the history is long enough
    (Temporal's suggestion, or `continue_as_new_after_events`), the run continues as new at its
    gate, in its delay, while its delivery is scheduled, or between steps, carrying its whole
    state as it is at that moment (`workflows.state.carry`): a signal handled just before is never
    lost.
    """

    @workflow.init
    def __init__(self, input: CampaignInput) -> None:
        self._input = input
        self._state = state.restore(input, workflow.now())
        # Run-local, by design not carried: what this run last indexed (the new run indexes
        # afresh), its notice tasks, and counters that only compare within one wait.
        self._upserted: tuple[object, ...] | None = None
        self._index_gates: bool | None = None
        self._last_gate: Gate | None = None
        """The latest gate of this run, as indexed for the review queue."""
        self._stray_signals = 0
        self._resumes = 0
        """`campaign_resumed` signals seen: a delivery held by a pause waits for this to move."""
        self._notice_tasks: list[asyncio.Task[None]] = []
        """Webhook notices under way; the run ends only once they are done (never blocked)."""
        self._drafting: workflow.ActivityHandle[DraftedContent] | None = None
        """The draft activity under way, which a cancellation request cancels."""

    # --- the run loop ---------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: CampaignInput) -> LeadStatus:
        """Runs the steps from where the state is until the last is done or the instance stops
        or fails (or continues as new).

        Returns the final `LeadStatus` when completed or stopped. A failed instance raises a
        non-retryable `ApplicationError` whose `type` is the `StopReason` (`DRAFT_FAILED`,
        `DELIVERY_FAILED`, `DELAY_FAILED`) and whose details hold the `LeadStatus`.

        A cancellation requested in Temporal (the Web UI's "Request Cancellation", `temporal
        workflow cancel`) is a stop with reason `CANCELED`, handled where it lands like any
        stop (`_on_cancellation`): the steps run in a task of their own, shielded from the
        cancellation, so they do the stop's bookkeeping (the gate's resolution, the mailbox
        slot, a delivery that has not handed over) instead of being torn down mid-way; then
        the execution closes Canceled (`asyncio.CancelledError`). Runs that were cancelled
        before the `cancel-as-stop` patch replay the old way: the cancellation is raised where
        the steps wait.
        """
        steps = asyncio.create_task(self._run_steps(input))
        handled = False
        while True:
            try:
                result = await asyncio.shield(steps)
                break
            except asyncio.CancelledError:
                if workflow.cancellation_reason() is None:
                    raise  # evicted from the worker's cache: the SDK cancels every task itself
                if steps.done():
                    result = steps.result()
                    break
                if handled:
                    continue  # one cancellation request is one stop
                handled = True
                if not versions.patched(CANCEL_AS_STOP):
                    steps.cancel()
                    return await steps
                self._on_cancellation()
        if handled and self._state.stop_reason == StopReason.CANCELED:
            # Temporal then says Canceled, as the operator asked; the lead status says why.
            raise asyncio.CancelledError(workflow.cancellation_reason() or "cancelled")
        return result

    def _on_cancellation(self) -> None:
        """A cancellation request becomes a stop (`CANCELED`, by `operator`, its reason as the
        note); the first stop wins, so an instance already stopping keeps its reason. A draft
        under way is cancelled (a cancelled instance needs no draft); a delivery is cancelled
        by the stop itself, like any stop's (`_attempt_delivery`)."""
        reason = workflow.cancellation_reason() or ""
        state.request_stop(
            self._state,
            StopReason.CANCELED,
            "operator",
            reason or "cancellation requested in Temporal",
            workflow.now(),
        )
        drafting = self._drafting
        if self._state.stop is not None and drafting is not None and not drafting.done():
            drafting.cancel()
        workflow.set_current_details(status.details(self._state))

    async def _run_steps(self, input: CampaignInput) -> LeadStatus:
        """`run`'s work: the steps, then the final status (or the failure raised)."""
        workflow.upsert_search_attributes(
            [
                search_attributes.ACCOUNT_GROUP_ID.value_set(input.account_group_id),
                search_attributes.CAMPAIGN_ID.value_set(input.campaign_id),
                search_attributes.LEAD_ID.value_set(input.lead.id),
            ]
        )
        s = self._state
        if s.notices:
            # Handed over by the previous run: sent first, in order, beside everything else.
            carried = list(s.notices)
            self._notice_tasks.append(asyncio.create_task(self._send_notices(carried)))
        steps = input.campaign.steps
        for index in range(s.step_index, len(steps)):
            if not await self._run_step(index, steps[index]):
                break
        else:
            self._set_phase(Phase.COMPLETED)
        await self._notices_done()
        if s.phase == Phase.FAILED:
            cause = f" — {s.failure.message}" if s.failure else ""
            raise ApplicationError(
                f"campaign instance failed at step {s.latest_step}: {s.stop_reason}{cause}",
                self._status(),
                type=s.stop_reason.value if s.stop_reason else None,
                non_retryable=True,
            )
        return self._status()

    async def _run_step(self, index: int, step: CampaignStep) -> bool:
        """Runs one step from where the state is in it; False when the instance ended during it."""
        s = self._state
        state.begin_step(s, step.id)
        if s.at != ResumeAt.DELAY and not await self._draft_gate_deliver(step):
            return False
        if index == len(self._input.campaign.steps) - 1:
            return True
        if step.delay_seconds > 0 or step.delay_business_days > 0:
            until = s.delay_until or await self._delay_end(step)
            if until is None or not await self._delay(step, until):
                return False
        state.advance(s)
        if self._continue_as_new_due():
            await self._continue_as_new_when_settled(lambda: s.stop is None)
            return not self._end_if_stop_requested()
        return True

    async def _draft_gate_deliver(self, step: CampaignStep) -> bool:
        s = self._state
        if s.at == ResumeAt.DELIVERY:
            assert s.content is not None, "a run resumed for delivery carries its approved content"
            self._set_phase(Phase.DELIVERING)
            if not await self._deliver(s.content):
                return False
            return not self._end_if_stop_requested()
        if s.at == ResumeAt.START:
            self._set_phase(Phase.DRAFTING)
            drafted = await self._draft(step)
            if drafted is None or self._end_if_stop_requested():
                return False
            state.drafted(s, drafted)
        content = s.content
        assert content is not None, "a run resumed at a gate carries its drafted content"
        if step.requires_approval:
            resumed = s.gate if s.at == ResumeAt.GATE else None
            if resumed is not None and resumed.id:
                gate = resumed
            else:
                expires_at = (
                    resumed.expires_at
                    if resumed is not None
                    else state.gate_deadline(
                        workflow.now(), self._input.campaign.approval_timeout_seconds
                    )
                )
                # Deterministic (the workflow's seeded random), unique per gate, opaque.
                gate = Gate(workflow.uuid4().hex, workflow.now(), expires_at)
            # Reviewers were told when the gate first opened, not again after continue-as-new.
            if not await self._await_approval(step, content, gate, notify=resumed is None):
                return False
        if self._end_if_stop_requested():
            return False
        state.release_for_delivery(s)
        self._publish()
        if not await self._deliver(content):
            return False
        # A stop that arrived during delivery waited for it; it takes effect now.
        return not self._end_if_stop_requested()

    async def _await_approval(
        self, step: CampaignStep, content: DraftedContent, gate: Gate, *, notify: bool
    ) -> bool:
        s = self._state
        state.open_gate(s, gate)
        self._last_gate = gate
        self._publish()
        events = versions.patched(APPROVAL_EVENTS)
        if notify:
            _metric_gates_opened().add(1)
        gate_notices = (
            self._notify_reviewers(step, gate, notify, events) if notify or events else None
        )

        def waiting() -> bool:
            return s.phase == Phase.AWAITING_APPROVAL and s.stop is None

        try:
            await workflow.wait_condition(
                lambda: not waiting() or self._continue_as_new_due(),
                timeout=_until(gate.expires_at) if gate.expires_at else None,
                timeout_summary=f"approval of {step.id} expires",
            )
            if waiting():
                await self._continue_as_new_when_settled(waiting, gate_notices)
        except TimeoutError:
            state.request_stop(
                s, StopReason.APPROVAL_EXPIRED, "system", "no approval in time", workflow.now()
            )
        finally:
            if gate_notices is not None and not gate_notices.done():
                gate_notices.cancel()
        resolution = state.resolve_gate(s, gate.id)
        outcome, _, decided_at = resolution
        _metric_gates_resolved().add(1, {"outcome": outcome})
        _metric_gate_decision_seconds().record(
            max((decided_at - gate.opened_at).total_seconds(), 0.0), {"outcome": outcome}
        )
        if events and self._input.campaign.webhook_url:
            resolved = notices.resolved(self._input, step.id, gate, resolution)
            # Beside the delivery, never in its way; the run ends only once it is done.
            self._notice_tasks.append(asyncio.create_task(self._send_notice(resolved)))
        # Approved: the `approve` signal closed the gate (so the query after it sees it closed).
        return not self._end_if_stop_requested()

    async def _delay(self, step: CampaignStep, until: datetime) -> bool:
        s = self._state
        state.start_delay(s, until)
        self._publish()
        try:
            await workflow.wait_condition(
                lambda: s.stop is not None or self._continue_as_new_due(),
                timeout=_until(until),
                timeout_summary=f"delay after {step.id}",
            )
        except TimeoutError:
            state.end_delay(s)
            return True
        if s.stop is None:
            await self._continue_as_new_when_settled(lambda: s.stop is None)
        return not self._end_if_stop_requested()

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
            # The next send time cannot be known (an unusable window or zone in an older
            # snapshot, or a calculation that failed every attempt): nothing more is sent.
            # No patch: code before this never saw an error here. Its calls retried without a
            # cap, and the one non-retryable failure (`InvalidSendWindow`) fails the step's
            # delivery first, on the same window check.
            self._fail(StopReason.DELAY_FAILED, _failure_of(step.id, error))
            return None
        return later.until

    # --- continue-as-new ------------------------------------------------------------------------

    def _continue_as_new_due(self) -> bool:
        info = workflow.info()
        limit = self._input.continue_as_new_after_events
        if limit is not None and info.get_current_history_length() >= limit:
            return True
        return info.is_continue_as_new_suggested()

    async def _continue_as_new_when_settled(
        self, still_waiting: Callable[[], bool], gate_notices: asyncio.Task[None] | None = None
    ) -> None:
        """Continues as new, carrying the state as it is once nothing can change it any more;
        returns instead when a signal handled meanwhile ended the wait (`still_waiting()` turned
        false: a stop, an approval, a resume), so the caller acts on it in this run.

        Runs past the `carry-notices` patch continue at once, handing unfinished webhook notices
        to the next run. Older runs first waited for them (up to an hour of retries), cancelling
        the gate's own notices first; their histories replay that way.
        """
        if versions.patched(CARRY_NOTICES):
            await workflow.wait_condition(workflow.all_handlers_finished)
        else:
            if gate_notices is not None and not gate_notices.done():
                gate_notices.cancel()
            await workflow.wait_condition(workflow.all_handlers_finished)
            await self._notices_done()
        if still_waiting():
            self._continue_as_new()

    def _continue_as_new(self) -> NoReturn:
        next_input = state.carry(self._state, self._input)
        assert next_input.state is not None
        workflow.logger.info(
            "continuing as new (run %d) at step %d (%s)",
            next_input.state.runs,
            next_input.state.step_index,
            next_input.state.at,
        )
        workflow.continue_as_new(next_input)

    # --- activities -----------------------------------------------------------------------------

    async def _draft(self, step: CampaignStep) -> DraftedContent | None:
        """The step's draft; None when the instance ended meanwhile: failed (`DRAFT_FAILED`), or
        stopped because a cancellation request cancelled the draft."""
        # Started, then awaited (the same command as `execute_activity`): a cancellation
        # request cancels it through this handle.
        self._drafting = workflow.start_activity(
            DRAFT_CONTENT_ACTIVITY,
            DraftRequest(step, self._input.lead),
            result_type=DraftedContent,
            start_to_close_timeout=options.DRAFT.start_to_close,
            heartbeat_timeout=options.DRAFT.heartbeat,
            retry_policy=options.DRAFT.retry,
            summary=f"draft {step.id}",
        )
        try:
            content: DraftedContent = await self._drafting
        except ActivityError as error:
            if self._state.stop is not None and isinstance(error.cause, CancelledError):
                self._end_if_stop_requested()  # cancelled by `_on_cancellation`
                return None
            self._fail(StopReason.DRAFT_FAILED, _failure_of(step.id, error))
            return None
        finally:
            self._drafting = None
        return content

    async def _deliver(self, content: DraftedContent) -> bool:
        """Delivers; False when the instance failed. A stop that arrives meanwhile cancels the
        delivery, which sends nothing unless it was already handing the message over; either
        way the caller then ends the instance as stopped. A delivery refused because the lead is
        suppressed (`LeadSuppressed`, non-retryable) is such a stop: `LEAD_UNSUBSCRIBED`.

        A delivery the activity defers (outside the send window, over the mailbox's cap or
        spacing, the campaign paused) waits in phase `SCHEDULED` until its `send_at`, or the
        campaign's resume, and is tried again; a stop meanwhile releases its mailbox slot.

        While the lead is out of office (`CampaignState.out_of_office_hold`, set only for a
        campaign with `outOfOfficeHold`), no attempt starts: the delivery waits, deferred
        `out_of_office`, until the hold ends (`_wait_out_of_office`)."""
        s = self._state
        while True:
            resumes = self._resumes
            held_until = state.out_of_office_until(s, workflow.now())
            if held_until is not None:
                if not await self._wait_out_of_office(content, held_until):
                    return True
                continue
            attempt = await self._attempt_delivery(content)
            if isinstance(attempt, bool):
                return attempt
            if attempt.outcome != DeliveryOutcome.DEFERRED:
                state.record_delivery(s, content.step_id, attempt, workflow.now())
                if attempt.outcome == DeliveryOutcome.IN_DOUBT:
                    workflow.logger.warning(
                        "delivery of %s is in doubt: an attempt died while handing it over",
                        attempt.message_id,
                    )
                return True
            if attempt.deferred_because == Deferral.CAMPAIGN_PAUSED and self._resumes != resumes:
                continue  # resumed while the activity found it paused: ask again at once
            scheduled = state.defer(s, content.step_id, attempt)
            _metric_deliveries_deferred().add(1, {"reason": scheduled.deferred_because.value})
            self._publish()
            if not await self._wait_for_send_time(content, attempt, resumes):
                return True
            self._set_phase(Phase.DELIVERING)

    async def _wait_for_send_time(
        self, content: DraftedContent, receipt: DeliveryReceipt, resumes: int
    ) -> bool:
        """Waits until the deferred delivery may be tried again; False when a stop came first
        (its mailbox slot, if any, is released: the cap counts sends, not the stopped). An
        out-of-office hold that ends after `send_at` ends the wait too (True, the slot
        released): the caller then waits for the hold."""
        s = self._state
        paused = receipt.send_at is None

        def waiting() -> bool:
            return (
                s.stop is None
                and not (paused and self._resumes != resumes)
                and not state.holds_past(s, receipt.send_at)
            )

        try:
            await workflow.wait_condition(
                lambda: not waiting() or self._continue_as_new_due(),
                timeout=PAUSE_RECHECK if receipt.send_at is None else _until(receipt.send_at),
                timeout_summary=(
                    f"deliver {content.step_id} on resume"
                    if paused
                    else f"deliver {content.step_id} at {receipt.send_at_local or receipt.send_at}"
                ),
            )
        except TimeoutError:
            return True
        if waiting():
            await self._continue_as_new_when_settled(waiting)
        held = state.holds_past(s, receipt.send_at)
        if s.stop is not None or held:
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
            if s.stop is None:
                return True  # held past its send time: the caller waits for the hold
            state.unschedule(s)
            return False
        return True

    async def _wait_out_of_office(self, content: DraftedContent, until: datetime) -> bool:
        """Holds the approved content until `until`, the end of the out-of-office hold, shown
        as a deferral (`out_of_office`, phase `SCHEDULED`). Returns True to try again: the hold
        ended, or a later answer moved or ended it; False when a stop came first. Continues as
        new while it waits, like any wait."""
        s = self._state
        scheduled = state.hold_delivery(s, content.step_id, until)
        _metric_deliveries_deferred().add(1, {"reason": scheduled.deferred_because.value})
        self._publish()

        def waiting() -> bool:
            hold = s.out_of_office_hold
            return s.stop is None and hold is not None and hold.until == until

        try:
            await workflow.wait_condition(
                lambda: not waiting() or self._continue_as_new_due(),
                timeout=_until(until),
                timeout_summary=f"deliver {content.step_id} after the out-of-office hold",
            )
        except TimeoutError:
            pass
        else:
            if waiting():
                await self._continue_as_new_when_settled(waiting)
            if s.stop is not None:
                state.unschedule(s)
                return False
            if state.out_of_office_until(s, workflow.now()) is not None:
                return True  # a later answer moved the hold: still scheduled, held again
        self._set_phase(Phase.DELIVERING)
        return True

    async def _attempt_delivery(self, content: DraftedContent) -> DeliveryReceipt | bool:
        """One run of the delivery activity: its receipt (sent, or deferred), or what `_deliver`
        returns when it ended otherwise (True: a stop; False: failed)."""
        s = self._state
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
            start_to_close_timeout=options.DELIVERY.start_to_close,
            # The activity heartbeats from its start, so a dead worker is noticed in seconds.
            heartbeat_timeout=options.DELIVERY.heartbeat,
            retry_policy=options.DELIVERY.retry,
            # Never abandoned half-way: a cancelled delivery is waited for, and the activity
            # itself decides whether it was too late to stop (see `deliver_message`).
            cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary=f"deliver {content.step_id}",
        )
        await workflow.wait_condition(lambda: delivery.done() or s.stop is not None)
        cancelled = False
        if not delivery.done() and versions.patched(CANCEL_DELIVERY_ON_STOP):
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
                state.request_stop(
                    s,
                    StopReason.LEAD_UNSUBSCRIBED,
                    "suppression list",
                    cause.message,
                    workflow.now(),
                )
                return True
            if (
                isinstance(cause, ApplicationError)
                and cause.type == ActivityErrorType.RECIPIENT_REFUSED.value
            ):
                # A hard bounce at send time (the activity suppressed the address): nothing was
                # sent, and the instance stops as a bounce that came back by mail would stop it.
                state.request_stop(
                    s, StopReason.LEAD_BOUNCED, "inbound", cause.message, workflow.now()
                )
                return True
            self._fail(StopReason.DELIVERY_FAILED, _failure_of(content.step_id, error))
            return False
        return receipt

    # --- webhook notices ------------------------------------------------------------------------

    def _notify_reviewers(
        self, step: CampaignStep, gate: Gate, pending: bool, events: bool
    ) -> asyncio.Task[None] | None:
        """The gate's notices, one after another in one task beside the gate (so they arrive in
        order): `approval.pending` when the gate has just opened, then, for gates opened after
        the `approval-events` patch, each `approval.reminder` at its time before expiry that
        is still ahead. Cancelled when the gate is resolved."""
        if not self._input.campaign.webhook_url:
            return None
        first = notices.notice(self._input, step.id, gate, ApprovalEvent.PENDING)
        if not events:
            # Recorded before gate ids: that notice exactly.
            first.gate_id = None
        reminders = notices.reminders(self._input, gate) if events else []
        return asyncio.create_task(
            self._send_gate_notices(step, gate, first if pending else None, reminders)
        )

    async def _send_gate_notices(
        self,
        step: CampaignStep,
        gate: Gate,
        pending: PendingApprovalNotice | None,
        reminders: list[float],
    ) -> None:
        if pending is not None:
            await self._send_notice(pending)
        for before in reminders:
            assert gate.expires_at is not None
            due = gate.expires_at - timedelta(seconds=before)
            if due <= workflow.now():
                continue  # already past (e.g. a reminder longer than the timeout)
            try:
                await workflow.sleep(due - workflow.now(), summary=f"remind reviewers of {step.id}")
            except asyncio.CancelledError:
                return
            await self._send_notice(notices.reminder(self._input, step.id, gate, before))

    async def _send_notices(self, carried: list[PendingApprovalNotice]) -> None:
        for notice in carried:
            await self._send_notice(notice)

    async def _notices_done(self) -> None:
        if not all(task.done() for task in self._notice_tasks):
            await workflow.wait_condition(lambda: all(task.done() for task in self._notice_tasks))

    async def _send_notice(self, notice: PendingApprovalNotice) -> None:
        # Runs beside the gate, never in its way: failures are logged and the gate stays open.
        state.notice_started(self._state, notice)
        try:
            await workflow.execute_activity(
                NOTIFY_PENDING_APPROVAL_ACTIVITY,
                notice,
                start_to_close_timeout=options.NOTIFY.start_to_close,
                retry_policy=options.NOTIFY.retry,
                summary=notices.summary(notice),
            )
        except ActivityError as error:
            if not isinstance(error.cause, CancelledError):
                workflow.logger.warning("pending-approval webhook gave up: %s", error.cause)
        except asyncio.CancelledError:
            pass
        state.notice_finished(self._state, notice)

    # --- publishing the state -------------------------------------------------------------------

    def _set_phase(self, phase: Phase) -> None:
        state.set_phase(self._state, phase)
        self._publish()

    def _publish(self) -> None:
        """Shows the state where operators look: the search attributes (upserted only when what
        they index changed: each upsert is a history event) and the UI's current details."""
        s = self._state
        pending, workflow_status = (
            s.phase == Phase.AWAITING_APPROVAL,
            status.STATUS_OF_PHASE[s.phase],
        )
        if self._index_gates is None:
            self._index_gates = versions.patched(GATE_SEARCH_ATTRIBUTES)
        indexed: tuple[object, ...] = (pending, workflow_status)
        if self._index_gates:
            indexed += (s.latest_step, self._last_gate)
        if indexed != self._upserted:
            self._upserted = indexed
            workflow.upsert_search_attributes(
                search_attributes.phase_updates(
                    workflow_status, pending, s.latest_step, self._last_gate, self._index_gates
                )
            )
        workflow.set_current_details(status.details(s))

    def _fail(self, reason: StopReason, failure: FailureRecord) -> None:
        state.fail(self._state, reason, failure)
        self._publish()

    def _end_if_stop_requested(self) -> bool:
        if not state.end_if_stop_requested(self._state):
            return False
        self._publish()
        return True

    # --- signals: they only change state; the run loop acts on it --------------------------------

    @workflow.signal
    def approve(self, *inputs: object) -> None:
        """Clears the open gate; refused (and recorded as such) when none is open.

        Input: `ApproveRequest` as an object (`request_id`, `decided_by`, `if_match`); see
        `_decode`. With `if_match` (the HTTP `If-Match` tags, RFC 9110 §13.1.1) it applies only
        when the open gate's id is one named, or `*` is named and a gate is open; otherwise it
        is refused `GATE_CHANGED` (a closed instance stays `WORKFLOW_CLOSED`). The check and
        the approval are one step of the workflow, so no gate can open between them.

        An input the strict payload codec marked (nobody with a payload key encrypted it) is
        refused and recorded as a signal input problem: approving sends mail, so only the API
        (or an operator through the codec endpoint) may.
        """
        if any(is_unverified(value) for value in inputs):
            self._input_problem(
                "approve",
                "input not encrypted with the deployment's payload keys (strict payload codec): "
                "not applied; approve through the API, or send the signal with --codec-endpoint",
            )
            return
        request = self._decode("approve", ApproveRequest, inputs, text_field="decided_by")
        # The gate closes here, not in the run loop, so the query that follows this signal
        # already reports it as applied.
        if state.approve(self._state, request, workflow.now()) is None:
            self._publish()

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
    def inbound_message(self, *inputs: object) -> None:
        """A classified inbound message matched to this lead (the inbound pipeline sends it):
        recorded, and a reply, hard bounce, complaint or unsubscribe stops the instance
        (`LEAD_REPLIED`, `LEAD_BOUNCED`, `LEAD_COMPLAINED`, `LEAD_UNSUBSCRIBED`). The same
        `inbound_message_id` applies once.

        Input: `InboundEvent` as an object; a `kind` that is not an `InboundKind` changes nothing
        and is shown as a signal input problem.
        """
        event = self._decode("inbound_message", InboundEvent, inputs, text_field="kind")
        kinds = [kind.value for kind in InboundKind]
        if event.kind not in kinds:
            self._input_problem(
                "inbound_message",
                f"`kind` {event.kind!r} is none of {', '.join(kinds)}: nothing applied",
            )
            return
        if event.received_at and not _is_aware_time(event.received_at):
            self._input_problem(
                "inbound_message",
                f"`received_at` {event.received_at!r} is no ISO 8601 time with a zone: "
                "the signal's time stands for it",
            )
        before = self._state.out_of_office_hold
        state.apply_inbound(
            self._state,
            event,
            workflow.now(),
            out_of_office_hold_seconds=self._out_of_office_hold_seconds(event),
        )
        hold = self._state.out_of_office_hold
        if hold is not before:
            workflow.logger.info(
                "out_of_office_hold on %s: %s",
                workflow.info().workflow_id,
                f"deliveries wait until {hold.until.isoformat()} (back on {hold.return_date}"
                f"{', capped by outOfOfficeHold' if hold.capped else ''})"
                if hold
                else "ended by a later answer",
            )
        workflow.set_current_details(status.details(self._state))

    def _out_of_office_hold_seconds(self, event: InboundEvent) -> float | None:
        """The campaign's `outOfOfficeHold` when `event` may hold deliveries (an automatic
        answer with a return date, in a campaign with the option on), else None.

        Behind the `out-of-office-hold` patch, asked only then: an instance enrolled with the
        option while older workers (which ignore it) ran delivered as usual, and replays so."""
        hold_seconds = self._input.campaign.out_of_office_hold_seconds
        if not hold_seconds or event.kind != InboundKind.AUTO_REPLY or not event.return_date:
            return None
        return hold_seconds if versions.patched(OUT_OF_OFFICE_HOLD) else None

    @workflow.signal
    def campaign_paused(self, *inputs: object) -> None:
        """The campaign was paused (the API's pause sends this to every running instance in one
        batch): shown in the status and the UI's details. What holds a delivery back is the
        store's pause flag, read right before each hand-over, not this signal.

        Input: `CampaignPauseEvent` as an object (`decided_by`, `at`), or who as a string.
        """
        event = self._decode("campaign_paused", CampaignPauseEvent, inputs, text_field="decided_by")
        state.pause(self._state, event.at, event.decided_by, workflow.now())
        workflow.set_current_details(status.details(self._state))

    @workflow.signal
    def campaign_resumed(self, *inputs: object) -> None:
        """The campaign was resumed: a delivery held by the pause is tried again at once (and
        takes its mailbox slot like any other).

        Input: `CampaignPauseEvent` as an object (`decided_by`, `at`), or who as a string.
        """
        self._decode("campaign_resumed", CampaignPauseEvent, inputs, text_field="decided_by")
        state.resume(self._state)
        self._resumes += 1
        workflow.set_current_details(status.details(self._state))

    def _request_stop(self, reason: StopReason, decided_by: str, note: str) -> None:
        state.request_stop(self._state, reason, decided_by, note, workflow.now())

    def _decode(
        self, signal: str, cls: type[_Input], inputs: tuple[object, ...], *, text_field: str
    ) -> _Input:
        """A signal's input, decoded leniently (`workflows.signal_inputs`); never drops it.

        What had to be ignored is logged as a warning naming the workflow id, counted in the
        `campaign_signal_input_problems` metric and shown in the UI's current details. An input
        the strict payload codec marked is read as the operator typed it (the operator signals
        only stop, pause or record: whoever reaches Temporal could terminate the run anyway).
        """
        if any(is_unverified(value) for value in inputs):
            inputs = tuple(
                _value_of_unverified(value)
                if isinstance(value, RawValue) and is_unverified(value)
                else value
                for value in inputs
            )
        decoded = signal_inputs.decode(
            cls,
            inputs,
            text_field=text_field,
            aliases=_WHO_ALIASES,
            max_chars=_FIELD_LIMITS,
            list_fields={"if_match": MAX_IF_MATCH_TAGS},
        )
        if decoded.problems:
            self._input_problem(signal, "; ".join(decoded.problems))
        return decoded.value

    def _input_problem(self, signal: str, summary: str) -> None:
        """Records what of a signal's input was not understood where operators look: a warning
        naming the workflow id, the `campaign_signal_input_problems` metric, the UI's details."""
        workflow.logger.warning(
            "signal %s on %s: input partly not understood: %s",
            signal,
            workflow.info().workflow_id,
            summary,
        )
        workflow.metric_meter().create_counter(
            "campaign_signal_input_problems",
            "Signals whose input was partly not understood.",
        ).add(1, {"signal": signal})
        state.record_signal_problem(self._state, signal, summary, workflow.now())
        workflow.set_current_details(status.details(self._state))

    @workflow.signal(dynamic=True)
    def stray_signal(self, name: str, args: Sequence[RawValue]) -> None:
        """Signals of any other name: ignored, the first ten of a run logged as warnings."""
        # Without this, signals of unknown names would be buffered in memory for the whole run.
        self._stray_signals += 1
        if self._stray_signals <= 10:
            workflow.logger.warning("ignored unknown signal %r", name)

    # --- queries: they only read ----------------------------------------------------------------

    @workflow.query
    def lead_status(self) -> LeadStatus:
        """The instance's status, its pending content and its audit, as `LeadStatus`."""
        return self._status()

    @workflow.query
    def approval_outcome(self, request: ApprovalOutcomeRequest) -> ApprovalOutcome:
        """The outcome of one approve signal, with the lead status it left behind."""
        record = state.outcome_of(self._state, request.request_id)
        if record is None:
            return ApprovalOutcome(request.request_id, None, None, self._status(), None)
        return ApprovalOutcome(
            request.request_id, record.applied, record.refusal, self._status(), record.gate_id
        )

    def _status(self) -> LeadStatus:
        return status.lead_status(self._state, self._input)
