"""Plain data exchanged with the campaign workflow: inputs, signals, query results, enums.

Every handler takes one dataclass so fields can be added without breaking callers or histories.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

WORKFLOW_TYPE = "CampaignWorkflow"


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
    """The instance has completed, stopped or failed, or a stop is under way."""


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


@dataclass
class CampaignSnapshot:
    """The campaign as it was when the lead was enrolled; later edits do not reach this instance."""

    name: str
    steps: list[CampaignStep]
    approval_timeout_seconds: float | None = None
    webhook_url: str | None = None
    """Notified when a gate opens; the signing secret stays in the store, out of the history."""


@dataclass
class ApprovalOutcomeRecord:
    request_id: str
    applied: bool
    refusal: ApprovalRefusal | None = None


class ResumeAt(StrEnum):
    """Where in a step a continued-as-new run picks up."""

    START = "start"
    """Draft the step."""
    GATE = "gate"
    """The content is drafted and waits at its gate."""
    DELAY = "delay"
    """The message is delivered; the step's delay runs."""


class Decision(StrEnum):
    """How a gate was resolved, in the audit record."""

    APPROVED = "approved"
    DISCARDED = "discarded"


class DeliveryOutcome(StrEnum):
    """What the delivery activity did with a message (`DeliveryReceipt.outcome`)."""

    SENT = "sent"
    """Handed over by this attempt."""
    ALREADY_SENT = "already_sent"
    """An earlier attempt had handed it over and recorded it: not sent again."""
    IN_DOUBT = "in_doubt"
    """An earlier attempt died while handing it over: the server may or may not hold it; not
    sent again (at most once)."""
    SUPERSEDED = "superseded"
    """Another attempt, still alive, took the hand-over: this one sent nothing."""


@dataclass
class ResumePoint:
    """Where a continued-as-new run picks up: the step, and whether it was at its gate or delay."""

    step_index: int
    at: ResumeAt = ResumeAt.START
    content: DraftedContent | None = None
    gate_expires_at: datetime | None = None
    delay_until: datetime | None = None


@dataclass
class DeliveryRecord:
    """Audit record of one step's delivery: what the activity reported, and when."""

    step_id: str
    message_id: str
    outcome: DeliveryOutcome
    at: datetime


@dataclass
class CarriedState:
    """What a run hands to the next over continue-as-new, so the status contract holds across."""

    resume: ResumePoint
    latest_step: str | None = None
    gate_decisions: list[GateDecision] = field(default_factory=list)
    approval_outcomes: list[ApprovalOutcomeRecord] = field(default_factory=list)
    runs: int = 1
    deliveries: list[DeliveryRecord] = field(default_factory=list)


@dataclass
class CampaignInput:
    account_group_id: str
    campaign_id: str
    workflow_instance_id: str
    lead: Lead
    campaign: CampaignSnapshot
    carried: CarriedState | None = None
    continue_as_new_after_events: int | None = None
    """Continue as new past this many history events; None leaves it to the server's suggestion."""


@dataclass
class DraftRequest:
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
    """What the delivery activity did: the message's id and the truth about its hand-over."""

    message_id: str
    outcome: DeliveryOutcome = DeliveryOutcome.SENT


@dataclass
class ApproveRequest:
    """Input of the `approve` signal (the API sends it; operators may too)."""

    request_id: str = ""
    """Fresh per API call; the outcome is kept under it for the query that follows."""
    decided_by: str = "operator"
    """The API key id (never the key) that approved, or the operator's name."""


@dataclass
class ApprovalOutcomeRequest:
    request_id: str


@dataclass
class DiscardRequest:
    """Operator-only: throw away the pending content and stop the instance."""

    decided_by: str = "operator"
    note: str = ""


@dataclass
class LeadEvent:
    """Operator-only: the lead replied or unsubscribed; the campaign must not write again."""

    decided_by: str = "operator"
    """Who reported it (a CRM, an operator)."""
    note: str = ""


@dataclass
class StopRequest:
    """Operator-only: stop the instance for a reason of the operator's."""

    reason: str = ""
    decided_by: str = "operator"


@dataclass
class StopRecord:
    reason: StopReason
    decided_by: str
    stopped_at: datetime
    note: str = ""


@dataclass
class PendingApprovalNotice:
    """What the pending-approval webhook receives (ids only: no lead data leaves by it)."""

    account_group_id: str
    campaign_id: str
    workflow_instance_id: str
    lead_id: str
    step_id: str
    webhook_url: str
    expires_at: datetime | None = None


@dataclass
class GateDecision:
    """Audit record of how a gate was resolved."""

    step_id: str
    decision: Decision
    decided_by: str
    decided_at: datetime
    request_id: str


@dataclass
class FailureRecord:
    """Why an instance failed: the activity's error type and message, for the operator."""

    step_id: str
    error_type: str | None
    """An `ActivityErrorType` value, or None for a failure without a type (a timeout)."""
    message: str
    attempt: int | None = None
    """The delivery attempt that failed last (1 = the first), when the activity reported it."""


@dataclass
class LeadStatus:
    lead_id: str
    workflow_status: WorkflowStatus
    workflow_instance_id: str
    latest_step: str | None = None
    workflow_stop_reason: StopReason | None = None
    has_pending_approval: bool = False
    pending_content: DraftedContent | None = None
    gate_expires_at: datetime | None = None
    gate_decisions: list[GateDecision] = field(default_factory=list)
    stop: StopRecord | None = None
    signal_input_problems: list[str] = field(default_factory=list)
    """The last few signal inputs that were partly not understood (the signals still applied)."""
    failure: FailureRecord | None = None
    """Set when the instance failed (`DRAFT_FAILED`, `DELIVERY_FAILED`): what the last attempt
    reported."""
    deliveries: list[DeliveryRecord] = field(default_factory=list)
    """Every step delivered so far, with its outcome: an `in_doubt` one may not have arrived."""


@dataclass
class ApprovalOutcome:
    request_id: str
    applied: bool | None
    """None when no signal with this request id has been seen (or it aged out of the record)."""
    refusal: ApprovalRefusal | None
    lead_status: LeadStatus


DRAFT_CONTENT_ACTIVITY = "draft_content"
DELIVER_MESSAGE_ACTIVITY = "deliver_message"
NOTIFY_PENDING_APPROVAL_ACTIVITY = "notify_pending_approval"


class ActivityErrorType(StrEnum):
    """`ApplicationError.type` of activity failures: all but `TRANSIENT_DELIVERY_ERROR` are
    raised non-retryable, since retrying cannot fix them."""

    TEMPLATE_RENDER_ERROR = "TemplateRenderError"
    PERMANENT_DELIVERY_ERROR = "PermanentDeliveryError"
    """The mail server refused the message for good (SMTP 5xx)."""
    INVALID_ADDRESS = "InvalidAddress"
    """The lead's address (or the sender) is not one we can send to."""
    COMPOSITION_ERROR = "CompositionError"
    """The message cannot be built from the drafted content and the lead's data."""
    SMTPUTF8_UNSUPPORTED = "SmtpUtf8Unsupported"
    """The address needs SMTPUTF8 (RFC 6531) and the mail server does not offer it."""
    TRANSIENT_DELIVERY_ERROR = "TransientDeliveryError"
    """Retryable: SMTP 4xx, the server unreachable; retried up to the delivery cap."""
    PERMANENT_NOTIFICATION_ERROR = "PermanentNotificationError"
