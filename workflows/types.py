"""Plain data exchanged with the campaign workflow: inputs, signals, query results, enums.

Every handler takes one dataclass so fields can be added without breaking callers or histories.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

WORKFLOW_TYPE = "CampaignWorkflow"


def workflow_id_for(account_group_id: str, campaign_id: str, workflow_instance_id: str) -> str:
    """The Temporal workflow id of an instance.

    Built from all three path ids, so a caller scoped to one account group or campaign can never
    name an instance of another: that id simply does not exist.
    """
    return f"campaign:{account_group_id}:{campaign_id}:{workflow_instance_id}"


class WorkflowStatus(StrEnum):
    RUNNING = "running"
    PENDING = "pending"
    """Waiting on an approval gate or a step's delay."""
    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"


class StopReason(StrEnum):
    CONTENT_DISCARDED = "CONTENT_DISCARDED"
    APPROVAL_EXPIRED = "APPROVAL_EXPIRED"
    LEAD_REPLIED = "LEAD_REPLIED"
    LEAD_UNSUBSCRIBED = "LEAD_UNSUBSCRIBED"
    STOPPED_BY_OPERATOR = "STOPPED_BY_OPERATOR"
    DRAFT_FAILED = "DRAFT_FAILED"
    DELIVERY_FAILED = "DELIVERY_FAILED"


class ApprovalRefusal(StrEnum):
    """Why an approve signal changed nothing."""

    NO_GATE_OPEN = "NO_GATE_OPEN"
    """The instance is drafting, delivering or waiting out a delay: nothing awaits approval."""
    ALREADY_APPROVED = "ALREADY_APPROVED"
    """Another approval of the same gate was applied first."""
    WORKFLOW_CLOSED = "WORKFLOW_CLOSED"
    """The instance has completed, stopped or failed."""


@dataclass
class Lead:
    id: str
    email: str
    first_name: str = ""
    last_name: str = ""
    company: str = ""


@dataclass
class CampaignStep:
    id: str
    subject: str
    body: str
    requires_approval: bool = True
    delay_seconds: float = 0.0
    channel: str = "email"


@dataclass
class CampaignSnapshot:
    """The campaign as it was when the lead was enrolled; later edits do not reach this instance."""

    name: str
    steps: list[CampaignStep]
    approval_timeout_seconds: float | None = None


@dataclass
class CampaignInput:
    account_group_id: str
    campaign_id: str
    workflow_instance_id: str
    lead: Lead
    campaign: CampaignSnapshot


@dataclass
class DraftRequest:
    workflow_instance_id: str
    step: CampaignStep
    lead: Lead


@dataclass
class DraftedContent:
    step_id: str
    subject: str
    body: str


@dataclass
class DeliveryRequest:
    workflow_id: str
    lead: Lead
    content: DraftedContent


@dataclass
class DeliveryReceipt:
    message_id: str
    already_delivered: bool = False
    """True when an earlier attempt had delivered it: the message was not sent again."""


@dataclass
class ApproveRequest:
    request_id: str
    """Fresh per API call; the outcome is kept under it for the query that follows."""
    approved_by: str
    """The API key id (never the key) that approved."""


@dataclass
class ApprovalOutcomeRequest:
    request_id: str


@dataclass
class GateDecision:
    """Audit record of how a gate was resolved."""

    step_id: str
    decision: str
    decided_by: str
    decided_at: datetime
    request_id: str


@dataclass
class LeadStatus:
    lead_id: str
    workflow_status: WorkflowStatus
    workflow_instance_id: str
    latest_step: str | None = None
    workflow_stop_reason: StopReason | None = None
    has_pending_approval: bool = False
    pending_content: DraftedContent | None = None
    gate_decisions: list[GateDecision] = field(default_factory=list)


@dataclass
class ApprovalOutcome:
    request_id: str
    applied: bool | None
    """None when no signal with this request id has been seen (or it aged out of the record)."""
    refusal: ApprovalRefusal | None
    lead_status: LeadStatus


DRAFT_CONTENT_ACTIVITY = "draft_content"
DELIVER_MESSAGE_ACTIVITY = "deliver_message"


class ActivityErrorType(StrEnum):
    """`ApplicationError.type` of failures that retrying cannot fix."""

    TEMPLATE_RENDER_ERROR = "TemplateRenderError"
    PERMANENT_DELIVERY_ERROR = "PermanentDeliveryError"
