"""How a campaign instance's state reads from outside: the `lead_status` query's `LeadStatus`,
and the Markdown "current details" of the Temporal UI. Pure functions of `CampaignState`.
"""

from __future__ import annotations

from datetime import datetime

from workflows.types import (
    CLOSED_PHASES,
    CampaignInput,
    CampaignState,
    Deferral,
    DeliveryOutcome,
    InboundRecord,
    LeadStatus,
    NextStep,
    NextStepWait,
    Phase,
    ResumeAt,
    WorkflowStatus,
)

STATUS_OF_PHASE = {
    Phase.DRAFTING: WorkflowStatus.RUNNING,
    Phase.AWAITING_APPROVAL: WorkflowStatus.PENDING,
    Phase.DELIVERING: WorkflowStatus.RUNNING,
    Phase.SCHEDULED: WorkflowStatus.PENDING,
    Phase.DELAYING: WorkflowStatus.PENDING,
    Phase.COMPLETED: WorkflowStatus.COMPLETED,
    Phase.STOPPED: WorkflowStatus.STOPPED,
    Phase.FAILED: WorkflowStatus.FAILED,
}
"""The public `workflowStatus` of each phase."""
EXCERPT_CHARS = 280
"""How much of a pending body the UI's details quote."""
DEFERRAL_TEXT = {
    Deferral.OUTSIDE_WINDOW: "outside the lead's send window",
    Deferral.MAILBOX_CAP: "the mailbox's daily cap is reached",
    Deferral.MAILBOX_SPACING: "the mailbox's minimum spacing",
    Deferral.CAMPAIGN_PAUSED: "the campaign is paused",
    Deferral.OUT_OF_OFFICE: "the lead is out of office",
}


def lead_status(state: CampaignState, input: CampaignInput) -> LeadStatus:
    """The instance's `LeadStatus`: the reference page's `leadStatus` fields, the pending
    content while a gate is open, and the audit (gate decisions, deliveries, stop, failure)."""
    awaiting = state.phase == Phase.AWAITING_APPROVAL
    gate = state.gate
    paused = state.campaign_paused
    return LeadStatus(
        lead_id=input.lead.id,
        workflow_status=STATUS_OF_PHASE[state.phase],
        workflow_instance_id=input.workflow_instance_id,
        latest_step=state.latest_step,
        workflow_stop_reason=state.stop_reason,
        has_pending_approval=awaiting,
        pending_content=state.content if awaiting else None,
        gate_expires_at=gate.expires_at if gate else None,
        gate_id=gate.id if gate else None,
        gate_opened_at=gate.opened_at if gate else None,
        gate_decisions=list(state.gate_decisions),
        stop=state.stop if state.phase == Phase.STOPPED else None,
        signal_input_problems=list(state.signal_input_problems),
        deliveries=list(state.deliveries),
        failure=state.failure,
        scheduled=state.scheduled,
        campaign_paused_at=datetime.fromisoformat(paused.at) if paused else None,
        inbound_messages=list(state.inbound_messages),
        out_of_office_hold=state.out_of_office_hold,
        next_step=next_step(state, input),
    )


def next_step(state: CampaignState, input: CampaignInput) -> NextStep | None:
    """The step the instance sends next, what it waits for and when it is due (`NextStep`);
    None once it is closed, or its last step is sent. After a step's delivery the next is the
    following step (due at the delay's end); before it, the step under way."""
    if state.phase in CLOSED_PHASES:
        return None
    steps = input.campaign.steps
    if state.at == ResumeAt.DELAY:
        following = state.step_index + 1
        if following >= len(steps):
            return None
        return NextStep(steps[following].id, NextStepWait.DELAY, state.delay_until)
    if state.step_index >= len(steps):
        return None
    step_id = steps[state.step_index].id
    if state.phase == Phase.AWAITING_APPROVAL:
        return NextStep(step_id, NextStepWait.APPROVAL)
    if state.phase == Phase.SCHEDULED and state.scheduled is not None:
        return NextStep(step_id, NextStepWait.SEND_TIME, state.scheduled.send_at)
    if state.phase == Phase.DELIVERING:
        return NextStep(step_id, NextStepWait.DELIVERY)
    return NextStep(step_id, NextStepWait.DRAFT)


def details(state: CampaignState) -> str:
    """The UI's "current details": what the instance is doing or waiting for, in Markdown; then
    deliveries in doubt, the campaign's pause, an out-of-office hold, and signal inputs partly
    not understood (newest last), so an operator who sent one sees it where they look."""
    text = _phase_details(state)
    in_doubt = [d for d in state.deliveries if d.outcome == DeliveryOutcome.IN_DOUBT]
    if in_doubt:
        listed = ", ".join(f"`{d.step_id}` ({d.message_id})" for d in in_doubt)
        text += (
            f"\n\n**Delivery in doubt**: {listed} — an attempt died while handing the message "
            "over; it was not sent again and may not have arrived."
        )
    paused = state.campaign_paused
    if paused is not None and state.phase not in CLOSED_PHASES:
        text += (
            f"\n\n**Campaign paused** since {paused.at} by {paused.decided_by}: gates stay "
            "approvable, nothing is sent until it is resumed."
        )
    hold = state.out_of_office_hold
    if hold is not None and state.phase not in CLOSED_PHASES:
        capped = " (capped by the campaign's `outOfOfficeHold`)" if hold.capped else ""
        text += (
            f"\n\n**Out of office**, back on {hold.return_date}: nothing is sent before "
            f"{hold.until.isoformat()}{capped}; gates stay approvable."
        )
    if state.inbound_messages:
        text += "\n\n**Inbound mail**:\n" + "\n".join(
            _inbound_line(record) for record in state.inbound_messages
        )
    if state.signal_input_problems:
        listed = "\n".join(f"- {problem}" for problem in state.signal_input_problems)
        text += f"\n\n**Signal input not understood**:\n{listed}"
    return text


def _inbound_line(record: InboundRecord) -> str:
    at = record.received_at.isoformat(timespec="seconds")
    line = f"- {record.kind.value.replace('_', ' ')} at {at}"
    if record.return_date:
        line += f", back on {record.return_date}"
    if record.excerpt:
        quoted = " ".join(record.excerpt.split())
        line += f": “{quoted}”"
    return line


def _phase_details(state: CampaignState) -> str:
    step = f"`{state.latest_step}`" if state.latest_step else "the first step"
    phase = state.phase
    if phase == Phase.AWAITING_APPROVAL and state.content is not None:
        body = state.content.body
        excerpt = body if len(body) <= EXCERPT_CHARS else body[:EXCERPT_CHARS] + "…"
        expires_at = state.gate.expires_at if state.gate else None
        expires = f"**Expires** {expires_at.isoformat()}" if expires_at else "**Expires** never"
        quoted = "\n".join(f"> {line}" for line in excerpt.splitlines() or [""])
        return (
            f"**Waiting for approval** of step {step}\n\n"
            f"**Subject** {state.content.subject}\n\n{quoted}\n\n{expires}"
        )
    if phase == Phase.SCHEDULED and state.scheduled is not None:
        scheduled = state.scheduled
        reason = DEFERRAL_TEXT[scheduled.deferred_because]
        if scheduled.send_at is None:
            return f"**Approved**, step {step}: held — {reason}; sends when it is resumed"
        when = scheduled.send_at_local or scheduled.send_at.isoformat()
        return f"**Approved**, step {step}: sends at {when} — {reason}"
    if phase == Phase.DELAYING and state.delay_until is not None:
        return f"**Waiting** after step {step} until {state.delay_until.isoformat()}"
    if phase == Phase.STOPPED and state.stop is not None:
        note = f" — {state.stop.note}" if state.stop.note else ""
        return f"**Stopped** at step {step}: `{state.stop.reason}` by {state.stop.decided_by}{note}"
    if phase in CLOSED_PHASES:
        reason = f": `{state.stop_reason}`" if state.stop_reason else ""
        if state.failure is not None:
            reason += f" — {state.failure.message}"
        return f"**{phase.value.capitalize()}** at step {step}{reason}"
    return f"**{phase.value.capitalize()}** step {step}"
