"""The campaign workflow's one state and its transitions: pure, deterministic functions.

`CampaignState` (in `workflows.types`, since a run carries it to the next) holds everything a run
knows. Every change to it is one of the functions here: the workflow's signal handlers and run
loop call them, and nothing else writes the state. They take the time as an argument and make no
`workflow.*` call, no I/O and no random choice, so they are unit-tested alone
(`tests/test_workflow_state.py`, property tests over arbitrary signal sequences included) and
imported into the workflow sandbox as they are (passed through, not re-imported per instance).

What continues as new is the state itself (`carry`), read back by `restore`: there is no second,
hand-kept list of what to carry, so nothing a signal changed before the continue-as-new is lost.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

from workflows.types import (
    CLOSED_PHASES,
    ApprovalOutcomeRecord,
    ApprovalRefusal,
    ApproveRequest,
    CampaignInput,
    CampaignPause,
    CampaignState,
    Decision,
    Deferral,
    DeliveryOutcome,
    DeliveryReceipt,
    DeliveryRecord,
    DraftedContent,
    FailureRecord,
    Gate,
    GateDecision,
    InboundEvent,
    InboundKind,
    InboundRecord,
    OutOfOfficeHold,
    PendingApprovalNotice,
    Phase,
    ResumeAt,
    ScheduledDelivery,
    StopReason,
    StopRecord,
)

APPROVAL_OUTCOMES_KEPT = 128
"""Approve outcomes kept by request id: enough to answer the query that follows each approve
call even under a burst of concurrent approvals, small enough that a flood of signals cannot grow
the state (and so the input of the next run)."""
SIGNAL_INPUT_PROBLEMS_KEPT = 5
MAX_SIGNAL_INPUT_PROBLEM_CHARS = 200
"""A problem line is cut here: the state is carried, so every part of it is bounded."""
NOTICES_CARRIED = 8
"""Unfinished webhook notices a run hands to the next, newest kept. A gate has at most two in
flight (pending, resolved); more means a receiver down through many gates, whose oldest notices
have been retried for most of an hour already."""
INBOUND_MESSAGES_KEPT = 8
"""Inbound messages an instance keeps (newest): enough to show what happened and to apply a
message resent by its source once; bounded, since the state is carried."""
INBOUND_IDS_KEPT = 256
"""Digests of applied inbound message ids an instance keeps (16 hex characters each): a message
resent by its source within the last this-many applies once; the pipeline's own record of each
message keeps it exactly once beyond that."""
MAX_EXCERPT_CHARS = 400
"""A reply's excerpt is cut here (a reply stops the instance, so it is never carried)."""
STOP_OF_INBOUND = {
    InboundKind.REPLY: StopReason.LEAD_REPLIED,
    InboundKind.HARD_BOUNCE: StopReason.LEAD_BOUNCED,
    InboundKind.COMPLAINT: StopReason.LEAD_COMPLAINED,
    InboundKind.UNSUBSCRIBE: StopReason.LEAD_UNSUBSCRIBED,
}
"""The inbound kinds that stop an instance, and the stop reason of each; an automatic answer
or a soft bounce is recorded only."""
ANY_GATE = "*"
"""`If-Match: *`: any open gate (RFC 9110 §13.1.1)."""
MAX_OUT_OF_OFFICE_HOLD = timedelta(days=60)
"""The longest an out-of-office answer holds an instance's deliveries, whatever its snapshot
says (the API refuses a longer `outOfOfficeHold`): a return date further out is more likely a
misread than a two-month absence, and the sequence should not wait on it longer."""


# --- starting and continuing as new -------------------------------------------------------------


def restore(input: CampaignInput, now: datetime) -> CampaignState:
    """The state a run starts with: fresh at enrolment, the carried state after a continue-as-new
    (`input.state`), or the legacy `CarriedState` of a run continued as new by code from before
    this module (`input.carried`), mapped field by field.

    `now` stands in for the opening time of a legacy gate carried without one.
    """
    if input.state is not None:
        return input.state
    carried = input.carried
    if carried is None:
        return CampaignState()
    resume = carried.resume
    gate = None
    if resume.at == ResumeAt.GATE:
        # A gate carried before gate ids has none: the run opens it under a new id ("").
        gate = Gate(resume.gate_id or "", resume.gate_opened_at or now, resume.gate_expires_at)
    paused = carried.campaign_paused
    return CampaignState(
        step_index=resume.step_index,
        at=resume.at,
        latest_step=carried.latest_step,
        content=resume.content,
        gate=gate,
        delay_until=resume.delay_until if resume.at == ResumeAt.DELAY else None,
        gate_decisions=list(carried.gate_decisions),
        deliveries=list(carried.deliveries),
        approval_outcomes=list(carried.approval_outcomes),
        campaign_paused=CampaignPause(paused[0], paused[1])
        if paused and len(paused) == 2
        else None,
        runs=carried.runs,
    )


def carry(state: CampaignState, input: CampaignInput) -> CampaignInput:
    """The next run's input: this run's input with the whole state, as it is now (the next run's
    number counted up, the oldest unfinished notices beyond `NOTICES_CARRIED` dropped)."""
    return replace(
        input,
        carried=None,
        state=replace(state, runs=state.runs + 1, notices=state.notices[-NOTICES_CARRIED:]),
    )


# --- the run loop's steps -----------------------------------------------------------------------


def set_phase(state: CampaignState, phase: Phase) -> None:
    """Enters `phase` (drafting, delivering, …) as the run loop goes."""
    state.phase = phase


def begin_step(state: CampaignState, step_id: str) -> None:
    """The run is at the step `state.step_index`, whose id is `step_id`."""
    state.latest_step = step_id


def drafted(state: CampaignState, content: DraftedContent) -> None:
    """The step's content is drafted."""
    state.content = content


def open_gate(state: CampaignState, gate: Gate) -> None:
    """The drafted content waits at `gate` for an approval."""
    state.gate = gate
    state.at = ResumeAt.GATE
    state.phase = Phase.AWAITING_APPROVAL


def gate_deadline(now: datetime, timeout_seconds: float | None) -> datetime | None:
    """When a gate opened at `now` expires under the campaign's `approval_timeout_seconds`
    (None or 0: never)."""
    return now + timedelta(seconds=timeout_seconds) if timeout_seconds else None


def release_for_delivery(state: CampaignState) -> None:
    """The content goes to delivery (approved, or its step has no gate): a continue-as-new from
    here delivers it."""
    state.at = ResumeAt.DELIVERY
    state.phase = Phase.DELIVERING


def defer(state: CampaignState, step_id: str, receipt: DeliveryReceipt) -> ScheduledDelivery:
    """The delivery activity put the message off (`receipt.outcome` is `DEFERRED`): it waits in
    phase `SCHEDULED`, counting its deferrals; returns the schedule."""
    previous = state.scheduled
    state.scheduled = ScheduledDelivery(
        step_id=step_id,
        deferred_because=receipt.deferred_because or Deferral.OUTSIDE_WINDOW,
        send_at=receipt.send_at,
        send_at_local=receipt.send_at_local,
        deferrals=previous.deferrals + 1 if previous else 1,
    )
    state.phase = Phase.SCHEDULED
    return state.scheduled


def unschedule(state: CampaignState) -> None:
    """A scheduled delivery will not be tried again (a stop came first)."""
    state.scheduled = None


def record_delivery(
    state: CampaignState, step_id: str, receipt: DeliveryReceipt, now: datetime
) -> DeliveryRecord:
    """The step's message was handed over (or found handed over, or in doubt): the audit record,
    and the step moves on to its delay."""
    state.scheduled = None
    record = DeliveryRecord(step_id, receipt.message_id, receipt.outcome, now)
    state.deliveries.append(record)
    state.at = ResumeAt.DELAY
    return record


def start_delay(state: CampaignState, until: datetime) -> None:
    """The step's delay runs until `until`."""
    state.at = ResumeAt.DELAY
    state.delay_until = until
    state.phase = Phase.DELAYING


def end_delay(state: CampaignState) -> None:
    """The step's delay is over."""
    state.delay_until = None


def advance(state: CampaignState) -> None:
    """The step is done and the next begins: a continue-as-new from here drafts the next step."""
    state.step_index += 1
    state.at = ResumeAt.START
    state.content = None
    state.gate = None
    state.delay_until = None
    state.scheduled = None


# --- stopping and ending ------------------------------------------------------------------------


def request_stop(
    state: CampaignState, reason: StopReason, decided_by: str, note: str, now: datetime
) -> None:
    """Asks the run to stop; the first stop of an open instance wins, later ones change
    nothing."""
    if state.stop is None and state.phase not in CLOSED_PHASES:
        state.stop = StopRecord(reason, decided_by, now, note)


def end_if_stop_requested(state: CampaignState) -> bool:
    """Ends the instance as stopped if a stop was asked for (a discard is recorded as the
    step's gate decision); True when it did."""
    stop = state.stop
    if stop is None:
        return False
    if stop.reason == StopReason.CONTENT_DISCARDED and state.latest_step is not None:
        _record_stop_decision(
            state,
            state.latest_step,
            Decision.DISCARDED,
            stop,
            state.gate.id if state.gate else None,
        )
    end(state, Phase.STOPPED, stop.reason)
    return True


def _record_stop_decision(
    state: CampaignState, step_id: str, decision: Decision, stop: StopRecord, gate_id: str | None
) -> None:
    """A gate decision made by a stop (discarded, expired): its who and when are the stop's."""
    state.gate_decisions.append(
        GateDecision(
            step_id=step_id,
            decision=decision,
            decided_by=stop.decided_by,
            decided_at=stop.stopped_at,
            request_id="",
            gate_id=gate_id,
        )
    )


def fail(state: CampaignState, reason: StopReason, failure: FailureRecord) -> None:
    """Ends the instance as failed (`DRAFT_FAILED`, `DELIVERY_FAILED`), with what the activity
    reported last."""
    state.failure = failure
    end(state, Phase.FAILED, reason)


def end(state: CampaignState, phase: Phase, reason: StopReason | None) -> None:
    """Ends the instance in `phase` (completed, stopped, failed): nothing is pending any more."""
    state.stop_reason = reason
    state.content = None
    state.gate = None
    state.delay_until = None
    state.scheduled = None
    state.out_of_office_hold = None
    state.phase = phase


# --- the gate -----------------------------------------------------------------------------------


def approve(state: CampaignState, request: ApproveRequest, now: datetime) -> ApprovalRefusal | None:
    """Applies an approve signal: closes the open gate and releases its content for delivery,
    or refuses (None: applied). The outcome is recorded under the request id, when it has one.

    With `request.if_match` (HTTP `If-Match`, RFC 9110 §13.1.1) it applies only when the open
    gate's id is named, or `*` is named and a gate is open; otherwise `GATE_CHANGED`. A closed
    or stopping instance refuses `WORKFLOW_CLOSED`; with no gate open, `ALREADY_APPROVED` when
    the step's gate was decided, else `NO_GATE_OPEN`.
    """
    refusal: ApprovalRefusal | None = None
    gate = state.gate
    condition = request.if_match
    gate_named = condition is not None and (
        (ANY_GATE in condition and state.phase == Phase.AWAITING_APPROVAL)
        or (gate is not None and gate.id in condition)
    )
    if state.phase in CLOSED_PHASES or state.stop is not None:
        refusal = ApprovalRefusal.WORKFLOW_CLOSED
    elif condition is not None and not gate_named and ANY_GATE not in condition:
        refusal = ApprovalRefusal.GATE_CHANGED
    elif state.phase != Phase.AWAITING_APPROVAL:
        decisions = state.gate_decisions
        already = bool(decisions) and decisions[-1].step_id == state.latest_step
        refusal = ApprovalRefusal.ALREADY_APPROVED if already else ApprovalRefusal.NO_GATE_OPEN
    else:
        assert state.latest_step is not None, "a gate is open at a step"
        state.gate_decisions.append(
            GateDecision(
                step_id=state.latest_step,
                decision=Decision.APPROVED,
                decided_by=request.decided_by,
                decided_at=now,
                request_id=request.request_id,
                gate_id=gate.id if gate else None,
            )
        )
        state.gate = None
        release_for_delivery(state)
    if request.request_id:
        _record_outcome(
            state, request.request_id, refusal, gate.id if gate and not refusal else None
        )
    return refusal


def _record_outcome(
    state: CampaignState, request_id: str, refusal: ApprovalRefusal | None, gate_id: str | None
) -> None:
    outcomes = [r for r in state.approval_outcomes if r.request_id != request_id]
    outcomes.append(ApprovalOutcomeRecord(request_id, refusal is None, refusal, gate_id))
    state.approval_outcomes = outcomes[-APPROVAL_OUTCOMES_KEPT:]


def outcome_of(state: CampaignState, request_id: str) -> ApprovalOutcomeRecord | None:
    """The recorded outcome of the approve signal with `request_id` (None: not seen, or aged
    out)."""
    for record in reversed(state.approval_outcomes):
        if record.request_id == request_id:
            return record
    return None


def resolve_gate(state: CampaignState, gate_id: str) -> tuple[str, str, datetime]:
    """How the gate just left was resolved: (`approved` | `discarded` | `expired` | `stopped`,
    who, when). An expiry is recorded in the audit (`Decision.EXPIRED`, by `system`)."""
    last = state.gate_decisions[-1] if state.gate_decisions else None
    stop = state.stop
    if stop is None or (
        last is not None and last.gate_id == gate_id and last.decision == Decision.APPROVED
    ):
        assert last is not None, "a gate left without a stop was approved"
        return Decision.APPROVED.value, last.decided_by, last.decided_at
    if stop.reason == StopReason.APPROVAL_EXPIRED:
        assert state.latest_step is not None
        _record_stop_decision(state, state.latest_step, Decision.EXPIRED, stop, gate_id)
        return Decision.EXPIRED.value, stop.decided_by, stop.stopped_at
    if stop.reason == StopReason.CONTENT_DISCARDED:
        return Decision.DISCARDED.value, stop.decided_by, stop.stopped_at
    return "stopped", stop.decided_by, stop.stopped_at


# --- what signals tell about the campaign and the input ---------------------------------------


def pause(state: CampaignState, at: str, decided_by: str, now: datetime) -> None:
    """The campaign was paused at `at` (ISO 8601; anything else stands for `now`) by
    `decided_by`."""
    try:
        datetime.fromisoformat(at)
    except ValueError:
        # Not a time (an operator's typing): the signal still applies, at the workflow's now.
        at = ""
    state.campaign_paused = CampaignPause(at or now.isoformat(), decided_by)


def resume(state: CampaignState) -> None:
    """The campaign was resumed."""
    state.campaign_paused = None


def record_signal_problem(state: CampaignState, signal: str, summary: str, now: datetime) -> None:
    """Keeps what of a signal's input was not understood, newest last, the last
    `SIGNAL_INPUT_PROBLEMS_KEPT`."""
    line = f"`{signal}` at {now.isoformat(timespec='seconds')}: {summary}"
    if len(line) > MAX_SIGNAL_INPUT_PROBLEM_CHARS:
        line = line[: MAX_SIGNAL_INPUT_PROBLEM_CHARS - 1] + "…"
    kept = state.signal_input_problems[-(SIGNAL_INPUT_PROBLEMS_KEPT - 1) :]
    state.signal_input_problems = [*kept, line]


# --- webhook notices ----------------------------------------------------------------------------


def notice_started(state: CampaignState, notice: PendingApprovalNotice) -> None:
    """A notice is being sent (once, even if carried from the previous run)."""
    if not any(n is notice for n in state.notices):
        state.notices.append(notice)


def notice_finished(state: CampaignState, notice: PendingApprovalNotice) -> None:
    """A notice is done: sent, given up, or no longer due (its gate was resolved)."""
    state.notices = [n for n in state.notices if n is not notice]


# --- inbound mail -------------------------------------------------------------------------------


def inbound_id_digest(inbound_message_id: str) -> str:
    """A short, fixed-size stand-in for an inbound message id (SHA-256, 16 hex characters), so
    many ids can be kept in the carried state."""
    return hashlib.sha256(inbound_message_id.encode()).hexdigest()[:16]


def apply_inbound(
    state: CampaignState,
    event: InboundEvent,
    now: datetime,
    *,
    out_of_office_hold_seconds: float | None = None,
) -> InboundRecord | None:
    """Applies one classified inbound message: records it and, for a reply, a hard bounce, a
    complaint or an unsubscribe, asks the run to stop (`STOP_OF_INBOUND`; the first stop wins,
    as for any stop). Returns the record, or None when nothing was applied: a message id among
    the last `INBOUND_IDS_KEPT` applied (its source sent it again), or a kind that is not an
    `InboundKind`.

    An automatic answer with a return date also holds the instance's deliveries
    (`hold_for_out_of_office`) when `out_of_office_hold_seconds` is given: the campaign's
    `outOfOfficeHold`, passed by the workflow only for a campaign that has it on.

    `event.received_at` that is not ISO 8601 (or has no zone) stands for `now`; a `return_date`
    that is not an ISO 8601 date is dropped.
    """
    try:
        kind = InboundKind(event.kind)
    except ValueError:
        return None
    digest = inbound_id_digest(event.inbound_message_id) if event.inbound_message_id else None
    if digest is not None and digest in state.inbound_applied:
        return None
    try:
        received_at = datetime.fromisoformat(event.received_at)
    except ValueError:
        received_at = now
    if received_at.tzinfo is None:
        received_at = now
    excerpt = event.excerpt if kind == InboundKind.REPLY else ""
    if len(excerpt) > MAX_EXCERPT_CHARS:
        excerpt = excerpt[: MAX_EXCERPT_CHARS - 1] + "…"
    try:
        return_date: str | None = date.fromisoformat(event.return_date).isoformat()
    except ValueError:
        return_date = None  # none given, or not a date: the answer is still recorded
    record = InboundRecord(
        inbound_message_id=event.inbound_message_id,
        kind=kind,
        received_at=received_at,
        excerpt=excerpt,
        return_date=return_date,
    )
    state.inbound_messages = [*state.inbound_messages, record][-INBOUND_MESSAGES_KEPT:]
    if digest is not None:
        state.inbound_applied = [*state.inbound_applied, digest][-INBOUND_IDS_KEPT:]
    reason = STOP_OF_INBOUND.get(kind)
    if reason is not None:
        request_stop(state, reason, event.decided_by, f"{kind.value} received", now)
    if (
        kind == InboundKind.AUTO_REPLY
        and out_of_office_hold_seconds
        and state.phase not in CLOSED_PHASES
    ):
        hold_for_out_of_office(state, record, now, out_of_office_hold_seconds)
    return record


# --- the out-of-office hold ---------------------------------------------------------------------


def out_of_office_end(
    return_date: date, received_at: datetime, now: datetime, max_hold_seconds: float
) -> tuple[datetime, bool]:
    """When a hold for an answer that arrived at `received_at` (aware; `now` if it claims a
    later time) and gave `return_date` ends, and whether the cap ended it: 00:00 UTC of the
    return date, or `max_hold_seconds` after the answer arrived (at most
    `MAX_OUT_OF_OFFICE_HOLD`), whichever is first.

    UTC, not the lead's zone: the workflow reads no time zone database (a deterministic input;
    business days are an activity for the same reason). The send window, applied in the lead's
    zone by the delivery that follows, then decides the hour, as for any delivery.
    """
    back = datetime(return_date.year, return_date.month, return_date.day, tzinfo=UTC)
    cap = min(received_at, now) + min(timedelta(seconds=max_hold_seconds), MAX_OUT_OF_OFFICE_HOLD)
    return (cap, True) if cap < back else (back, False)


def hold_for_out_of_office(
    state: CampaignState, record: InboundRecord, now: datetime, max_hold_seconds: float
) -> OutOfOfficeHold | None:
    """An automatic answer (`record`) that gave a return date holds the instance's deliveries
    until `out_of_office_end`. The newest answer (by `received_at`) decides, shorter or longer
    than the hold it replaces: an answer that arrived before the one holding now (applied late)
    changes nothing, and one whose hold would already be over ends the hold. An answer without
    a return date changes nothing: it cannot be told from any other automatic answer (RFC 3834
    acknowledgements, "we got your message"), so it does not hold. Returns the hold now in force
    (None: none)."""
    current = state.out_of_office_hold
    if record.return_date is None:
        return current
    if current is not None and record.received_at < current.received_at:
        return current
    until, capped = out_of_office_end(
        date.fromisoformat(record.return_date), record.received_at, now, max_hold_seconds
    )
    state.out_of_office_hold = (
        OutOfOfficeHold(
            until=until,
            return_date=record.return_date,
            received_at=record.received_at,
            inbound_message_id=record.inbound_message_id,
            capped=capped,
        )
        if until > now
        else None
    )
    return state.out_of_office_hold


def out_of_office_until(state: CampaignState, now: datetime) -> datetime | None:
    """When the hold in force ends, or None when no hold is in force at `now` (a hold that has
    passed is dropped here)."""
    hold = state.out_of_office_hold
    if hold is None:
        return None
    if hold.until <= now:
        state.out_of_office_hold = None
        return None
    return hold.until


def holds_past(state: CampaignState, when: datetime | None) -> bool:
    """Whether a hold ends after `when` (a deferred delivery's send time): the delivery must
    wait for the hold instead. False for `when` None (a delivery held by a paused campaign is
    checked against the hold when it is resumed)."""
    hold = state.out_of_office_hold
    return when is not None and hold is not None and hold.until > when


def hold_delivery(state: CampaignState, step_id: str, until: datetime) -> ScheduledDelivery:
    """The approved content waits for the hold to end (deferred `out_of_office`, at `until`),
    shown like any deferral; returns the schedule."""
    return defer(
        state,
        step_id,
        DeliveryReceipt(
            message_id="",
            outcome=DeliveryOutcome.DEFERRED,
            send_at=until,
            deferred_because=Deferral.OUT_OF_OFFICE,
        ),
    )
