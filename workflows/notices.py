"""The approval gate's webhook notices as data: what each says and when reminders are due.

The workflow sends them (the `notify_pending_approval` activity, beside the gate, never in its
way); this module only builds them, deterministically, from the instance's input and its gate.
"""

from __future__ import annotations

from datetime import datetime

from workflows.types import ApprovalEvent, CampaignInput, Gate, PendingApprovalNotice


def notice(
    input: CampaignInput, step_id: str, gate: Gate, event: ApprovalEvent
) -> PendingApprovalNotice:
    """A notice of `event` about `gate` at `step_id`: ids only, no lead data (the receiver reads
    the rest through the API)."""
    return PendingApprovalNotice(
        account_group_id=input.account_group_id,
        campaign_id=input.campaign_id,
        workflow_instance_id=input.workflow_instance_id,
        lead_id=input.lead.id,
        step_id=step_id,
        webhook_url=input.campaign.webhook_url or "",
        expires_at=gate.expires_at,
        event=event.value,
        gate_id=gate.id,
    )


def resolved(
    input: CampaignInput,
    step_id: str,
    gate: Gate,
    resolution: tuple[str, str, datetime],
) -> PendingApprovalNotice:
    """The `approval.resolved` notice of `gate`: `resolution` is (approved | discarded | expired
    | stopped, who, when), as `workflows.state.resolve_gate` tells it."""
    sent = notice(input, step_id, gate, ApprovalEvent.RESOLVED)
    sent.resolution, sent.decided_by, sent.decided_at = resolution
    return sent


def reminders(input: CampaignInput, gate: Gate) -> list[float]:
    """Seconds before the gate's expiry at which `approval.reminder` is due, earliest first
    (none when the gate never expires)."""
    if gate.expires_at is None:
        return []
    return sorted(set(input.campaign.approval_reminder_seconds), reverse=True)


def reminder(
    input: CampaignInput, step_id: str, gate: Gate, before: float
) -> PendingApprovalNotice:
    """The `approval.reminder` notice due `before` seconds ahead of the gate's expiry (part of
    its event id)."""
    sent = notice(input, step_id, gate, ApprovalEvent.REMINDER)
    sent.reminder_seconds = before
    return sent


def summary(sent: PendingApprovalNotice) -> str:
    """The UI's label for the activity that sends `sent`."""
    if sent.event == ApprovalEvent.PENDING:
        return f"notify reviewers of {sent.step_id}"
    return f"{sent.event} of {sent.step_id}"
