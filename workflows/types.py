"""Plain data exchanged with the campaign workflow: inputs, signals, query results, enums.

Every handler takes one dataclass so fields can be added without breaking callers or histories.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

WORKFLOW_TYPE = "CampaignWorkflow"


class WorkflowStatus(StrEnum):
    """An instance's state (`workflowStatus`; in Temporal, the `LeadWorkflowStatus` search
    attribute)."""

    RUNNING = "running"
    """Drafting or delivering a step."""
    PENDING = "pending"
    """Waiting on an approval gate or a step's delay."""
    COMPLETED = "completed"
    """Every step delivered."""
    STOPPED = "stopped"
    """Ended by a stop: discarded, expired, the lead replied or unsubscribed, or `stop`."""
    FAILED = "failed"
    """A draft or a delivery failed for good (`DRAFT_FAILED`, `DELIVERY_FAILED`)."""


class StopReason(StrEnum):
    """Why an instance stopped or failed (`workflowStopReason`; in Temporal, also the `type`
    of a failed run's error)."""

    CONTENT_DISCARDED = "CONTENT_DISCARDED"
    """An operator discarded the content (the `discard` signal)."""
    APPROVAL_EXPIRED = "APPROVAL_EXPIRED"
    """The gate waited past the campaign's approval timeout."""
    LEAD_REPLIED = "LEAD_REPLIED"
    """The `lead_replied` signal: the lead answered, so nothing more is sent."""
    LEAD_UNSUBSCRIBED = "LEAD_UNSUBSCRIBED"
    """The `lead_unsubscribed` signal: nothing more is sent."""
    STOPPED_BY_OPERATOR = "STOPPED_BY_OPERATOR"
    """The `stop` signal, with the operator's reason in the stop record's note."""
    DRAFT_FAILED = "DRAFT_FAILED"
    """The step could not be drafted: its template failed for this lead, or the retries ran out."""
    LEAD_BOUNCED = "LEAD_BOUNCED"
    """The lead's address hard-bounced (an RFC 3464 DSN, a bounce of another format, or a
    permanent SMTP refusal): it is suppressed in the account group, and nothing more is sent."""
    LEAD_COMPLAINED = "LEAD_COMPLAINED"
    """The lead marked a message as spam (an RFC 5965 feedback report): suppressed, nothing more
    is sent."""
    DELIVERY_FAILED = "DELIVERY_FAILED"
    """The message could not be delivered: a permanent error (SMTP 5xx, an address or message
    that cannot be sent, SMTPUTF8 missing), or the retries ran out."""
    DELAY_FAILED = "DELAY_FAILED"
    """The end of a `businessDays` delay could not be computed (the snapshot's send window or the
    lead's time zone is unusable, or the calculation failed every attempt): the next step's send
    time cannot be known, so nothing more is sent."""
    CANCELED = "CANCELED"
    """Cancellation was requested in Temporal (the Web UI's "Request Cancellation", `temporal
    workflow cancel`): handled like a stop where it lands, then the execution closes Canceled
    (patch `cancel-as-stop`; an execution cancelled before it reads so from Temporal)."""
    TERMINATED = "TERMINATED"
    """The execution was terminated in Temporal (the Web UI's "Terminate", `temporal workflow
    terminate`; a reset terminates the run it replaces). No workflow code runs then: the API
    reads it from the execution's status, never from the workflow."""
    TIMED_OUT = "TIMED_OUT"
    """The execution passed a Temporal execution or run timeout (read from its status)."""
    WORKFLOW_FAILED = "WORKFLOW_FAILED"
    """The execution failed in Temporal without a reason of ours (e.g. a non-determinism error
    on a worker that fails workflows for it): read from its status."""


class ApprovalRefusal(StrEnum):
    """Why an approve signal changed nothing."""

    NO_GATE_OPEN = "NO_GATE_OPEN"
    """The instance is drafting, delivering or waiting out a delay: nothing awaits approval."""
    ALREADY_APPROVED = "ALREADY_APPROVED"
    """Another approval of the same gate was applied first."""
    WORKFLOW_CLOSED = "WORKFLOW_CLOSED"
    """The instance has completed, stopped or failed, or a stop is under way."""
    GATE_CHANGED = "GATE_CHANGED"
    """The approval was conditional (`ApproveRequest.if_match`, HTTP `If-Match`) and the open
    gate is not one it named, or no gate is open: nothing was applied."""


@dataclass
class Lead:
    """A lead as enrolled, checked and normalised by the API (`api.schemas.LeadBody`): `id` is
    24 lowercase hex, `email` one normalised address, the names without control characters."""

    id: str
    email: str
    first_name: str = ""
    last_name: str = ""
    company: str = ""
    time_zone: str | None = None
    """The lead's IANA time zone (checked at enrolment); it wins over the send window's."""


@dataclass
class CampaignStep:
    """One step of a campaign snapshot: Jinja2 templates for subject and body, whether its
    content waits at a gate, and the wait after its delivery (none after the last step)."""

    id: str
    subject: str
    """The subject template. For a threaded step (`thread_step_ids` set) it is the subject
    template of the thread's first step, which the draft renders again and sends after `Re: `
    (the API's threaded step has no subject of its own)."""
    body: str
    requires_approval: bool = True
    delay_seconds: float = 0.0
    delay_business_days: int = 0
    """The wait after delivery in sending days of the campaign's window (the API's
    `businessDays`); when set, `delay_seconds` is 0."""
    thread_step_ids: list[str] = field(default_factory=list)
    """For a threaded step (the API's `thread: true`): the ids of the earlier steps whose
    thread it replies in, the thread's first step first and the step just before this one last
    (`api.campaigns.snapshot_of`). Empty: the step starts a thread of its own, as every step
    enrolled before threading did."""


@dataclass
class SendWindow:
    """When a campaign's messages may be handed over (the API's `sendWindow`), as plain values
    checked at PUT (`campaign_engine.send_windows.parse_window` reads them).

    `days` are `mon` … `sun`; `start` and `end` local `HH:MM` (`end` may be `24:00`);
    `time_zone` an IANA name (None: UTC; a lead's own zone wins); `holidays` a country code
    for the `holidays` package (`US`, `US-NY`, `DE`): those days are not sending days.
    """

    days: list[str]
    start: str
    end: str
    time_zone: str | None = None
    holidays: str | None = None


@dataclass
class CampaignSnapshot:
    """The campaign as it was when the lead was enrolled; later edits do not reach this instance."""

    name: str
    steps: list[CampaignStep]
    approval_timeout_seconds: float | None = None
    webhook_url: str | None = None
    """Notified when a gate opens; the signing secret stays in the store, out of the history."""
    approval_reminder_seconds: list[float] = field(default_factory=list)
    """Seconds before a gate's expiry at which `approval.reminder` is sent (one per entry)."""
    send_window: SendWindow | None = None
    """None: messages go out as soon as they are approved."""
    mailbox: str | None = None
    """The campaign's `from`: `Name <address>` or an address (a configured mailbox, whose daily
    cap and spacing apply); None: the deployment's sender."""
    out_of_office_hold_seconds: float | None = None
    """The campaign's `outOfOfficeHold`: the longest an out-of-office answer's return date may
    hold the lead's next delivery, in seconds from the answer's arrival (the API allows 1 hour
    to 60 days). None: no hold (answers are recorded only), as for every instance enrolled
    before the option existed."""


@dataclass
class ApprovalOutcomeRecord:
    """One approve signal's outcome, carried over continue-as-new under its request id."""

    request_id: str
    applied: bool
    refusal: ApprovalRefusal | None = None
    """None when the approval applied."""
    gate_id: str | None = None
    """The gate the approval applied to (None when refused)."""


class ResumeAt(StrEnum):
    """Where in a step the run is, and so where a continued-as-new run picks up
    (`CampaignState.at`)."""

    START = "start"
    """Draft the step."""
    GATE = "gate"
    """The content is drafted and waits at its gate."""
    DELAY = "delay"
    """The message is delivered; the step's delay runs."""
    DELIVERY = "delivery"
    """The content is approved and waits for its send time (a window, a mailbox's cap, a paused
    campaign): deliver it."""


class Decision(StrEnum):
    """How a gate was resolved, in the audit record."""

    APPROVED = "approved"
    """An approve signal (the API's or an operator's) released the content for delivery."""
    DISCARDED = "discarded"
    """The `discard` signal threw the content away, and the instance stopped."""
    EXPIRED = "expired"
    """The gate's `approvalTimeout` passed (decided by `system`)."""


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
    DEFERRED = "deferred"
    """Not handed over yet, and nothing claimed: outside the send window, over the mailbox's
    cap or spacing, or the campaign is paused (`DeliveryReceipt.deferred_because`). Tried again
    at `DeliveryReceipt.send_at`, or when the campaign resumes."""


class Deferral(StrEnum):
    """Why a delivery waits (`DeliveryReceipt.deferred_because`; the API's `deferredBecause`,
    the `campaign_deliveries_deferred{reason}` metric)."""

    OUTSIDE_WINDOW = "outside_window"
    """The lead's send window is closed now: it waits for the window to open."""
    MAILBOX_CAP = "mailbox_cap"
    """The mailbox's daily cap is reached: it waits for the next window day with room."""
    MAILBOX_SPACING = "mailbox_spacing"
    """The mailbox sent (or will send) another message within its minimum spacing."""
    CAMPAIGN_PAUSED = "campaign_paused"
    """The campaign is paused: it waits for `resume`."""
    OUT_OF_OFFICE = "out_of_office"
    """The lead's automatic answer gave a return date and the campaign holds deliveries until
    then (`CampaignSnapshot.out_of_office_hold_seconds`, `CampaignState.out_of_office_hold`):
    decided by the workflow, not the delivery activity."""


@dataclass
class ResumePoint:
    """Legacy: where a run continued as new before the state refactor picked up (inside
    `CarriedState`); read only by `workflows.state.restore`."""

    step_index: int
    at: ResumeAt = ResumeAt.START
    content: DraftedContent | None = None
    gate_expires_at: datetime | None = None
    delay_until: datetime | None = None
    gate_id: str | None = None
    """The open gate's id, kept over continue-as-new (None in runs recorded before gate ids)."""
    gate_opened_at: datetime | None = None


@dataclass
class DeliveryRecord:
    """Audit record of one step's delivery: what the activity reported, and when."""

    step_id: str
    message_id: str
    outcome: DeliveryOutcome
    at: datetime


@dataclass
class ScheduledDelivery:
    """Approved content waiting to be handed over: when (None: at the campaign's resume), and
    why it waits."""

    step_id: str
    deferred_because: Deferral
    send_at: datetime | None = None
    send_at_local: str | None = None
    deferrals: int = 1
    """How many times this step's delivery was deferred so far."""


@dataclass
class CarriedState:
    """Legacy: what a run handed to the next over continue-as-new before the state refactor
    (`CampaignInput.carried`). Runs now carry their whole `CampaignState`
    (`CampaignInput.state`); this is read only by `workflows.state.restore`, for runs that
    continued as new from older code."""

    resume: ResumePoint
    latest_step: str | None = None
    gate_decisions: list[GateDecision] = field(default_factory=list)
    approval_outcomes: list[ApprovalOutcomeRecord] = field(default_factory=list)
    runs: int = 1
    deliveries: list[DeliveryRecord] = field(default_factory=list)
    campaign_paused: list[str] | None = None
    """`[when, who]` of the campaign's pause as the `campaign_paused` signal told the run; None
    when not paused (or resumed)."""


class InboundKind(StrEnum):
    """What an inbound message about a lead was classified as (`inbound.classification.Kind`,
    whose values these are; an `unknown` one never reaches an instance)."""

    REPLY = "reply"
    """The lead wrote back: the instance stops `LEAD_REPLIED`."""
    AUTO_REPLY = "auto_reply"
    """An automatic answer (RFC 3834; out of office): recorded, never a stop."""
    HARD_BOUNCE = "hard_bounce"
    """The address does not exist (or refuses us) for good: the instance stops `LEAD_BOUNCED`."""
    SOFT_BOUNCE = "soft_bounce"
    """A temporary delivery failure: recorded (enough of them count as hard, elsewhere)."""
    COMPLAINT = "complaint"
    """A spam complaint (RFC 5965): the instance stops `LEAD_COMPLAINED`."""
    UNSUBSCRIBE = "unsubscribe"
    """A message to our `List-Unsubscribe` mailto (RFC 2369, 8058): stops `LEAD_UNSUBSCRIBED`."""


@dataclass
class InboundEvent:
    """Input of the `inbound_message` signal: one classified inbound message matched to this
    instance's lead (the inbound pipeline sends it; operators may too)."""

    inbound_message_id: str = ""
    """The pipeline's id of the message; the same id applies once (an empty one always)."""
    kind: str = ""
    """An `InboundKind` value; anything else is recorded as a signal input problem."""
    received_at: str = ""
    """When the message arrived (ISO 8601); anything else stands for the signal's time."""
    excerpt: str = ""
    """For a reply: its new text, quoted history stripped, a few hundred characters (lead data:
    encrypted in Temporal like the rest)."""
    return_date: str = ""
    """For an out-of-office answer: the day the lead is back (ISO 8601 date), when it says."""
    decided_by: str = "inbound"
    """Who classified it: `inbound` for the pipeline, or an operator."""


@dataclass
class InboundRecord:
    """One inbound message as the instance recorded it (`LeadStatus.inbound_messages`)."""

    inbound_message_id: str
    kind: InboundKind
    received_at: datetime
    excerpt: str = ""
    """A reply's new text (empty for the other kinds)."""
    return_date: str | None = None
    """An out-of-office answer's return day (ISO 8601), when it gave one."""


class Phase(StrEnum):
    """Where the run is: finer than `WorkflowStatus`, which it maps to
    (`workflows.status.STATUS_OF_PHASE`)."""

    DRAFTING = "drafting"
    AWAITING_APPROVAL = "awaiting_approval"
    DELIVERING = "delivering"
    SCHEDULED = "scheduled"
    """Approved; waiting for the send window, a mailbox slot or the campaign's resume."""
    DELAYING = "delaying"
    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"


CLOSED_PHASES = frozenset({Phase.COMPLETED, Phase.STOPPED, Phase.FAILED})
"""Phases an instance never leaves."""


@dataclass
class Gate:
    """An approval gate: its opaque id (the API's ETag), when it opened, when it expires (None:
    never)."""

    id: str
    opened_at: datetime
    expires_at: datetime | None = None


@dataclass
class OutOfOfficeHold:
    """The lead is out of office: no delivery of the instance is handed over before `until`
    (`workflows.state.hold_for_out_of_office` sets it, from the newest automatic answer that
    gave a return date, when the campaign's `outOfOfficeHold` is on)."""

    until: datetime
    """When the hold ends (aware UTC): 00:00 UTC of the return date, or the answer's arrival
    plus the campaign's `outOfOfficeHold`, whichever is first."""
    return_date: str
    """The return date the answer gave (ISO 8601 date)."""
    received_at: datetime
    """When that answer arrived (aware): a later answer replaces the hold, an earlier one
    applied late does not."""
    inbound_message_id: str = ""
    """The answer's inbound message id (empty when the signal carried none)."""
    capped: bool = False
    """True when `outOfOfficeHold` ended it before the return date."""


@dataclass
class CampaignPause:
    """The campaign's pause as the `campaign_paused` signal told the instance: when (ISO 8601),
    by whom."""

    at: str
    decided_by: str


@dataclass
class CampaignState:
    """Everything a run of `CampaignWorkflow` knows, and everything it carries over
    continue-as-new: the one state of an instance.

    Changed only by the pure transitions of `workflows.state` (the signal handlers and the run
    loop call them); rendered by `workflows.status`; carried whole (`CampaignInput.state`). What
    is not here is run-local by design (what this run last indexed, its notice tasks, counters
    for its log lines): see `CampaignWorkflow.__init__`.
    """

    phase: Phase = Phase.DRAFTING
    step_index: int = 0
    """The campaign step the run is at (0-based)."""
    at: ResumeAt = ResumeAt.START
    """Where in that step: drafting, at its gate, delivering (approved content waits to be
    handed over) or in its delay. A continued-as-new run resumes here."""
    latest_step: str | None = None
    content: DraftedContent | None = None
    """The step's drafted content: pending at its gate, then approved until delivered."""
    gate: Gate | None = None
    """The open gate; None when none is open."""
    delay_until: datetime | None = None
    """When the step's delay ends, once known (`at` is `DELAY`)."""
    scheduled: ScheduledDelivery | None = None
    """Approved content waiting for its send time (phase `SCHEDULED`)."""
    stop: StopRecord | None = None
    """A stop asked for by a signal, an expired gate or a suppressed lead; the run ends on it."""
    stop_reason: StopReason | None = None
    """Why the instance ended (stopped or failed), once it has."""
    failure: FailureRecord | None = None
    gate_decisions: list[GateDecision] = field(default_factory=list)
    deliveries: list[DeliveryRecord] = field(default_factory=list)
    approval_outcomes: list[ApprovalOutcomeRecord] = field(default_factory=list)
    """The latest approve signals' outcomes by request id, oldest first (bounded)."""
    signal_input_problems: list[str] = field(default_factory=list)
    """The last few signal inputs that were partly not understood, newest last (bounded)."""
    campaign_paused: CampaignPause | None = None
    inbound_messages: list[InboundRecord] = field(default_factory=list)
    """Inbound messages applied to this instance, newest last (the last few)."""
    inbound_applied: list[str] = field(default_factory=list)
    """Digests of the inbound message ids applied, newest last (many more than the records kept):
    a message its source sends again applies once."""
    out_of_office_hold: OutOfOfficeHold | None = None
    """The lead is out of office until `until`: deliveries wait (deferred `out_of_office`).
    None: no hold, or it has passed."""
    notices: list[PendingApprovalNotice] = field(default_factory=list)
    """Webhook notices started and not yet finished (sent, given up or no longer due), oldest
    first: a run that continues as new hands them to the next, which sends them."""
    runs: int = 1
    """Which run of the instance this is (1 at enrolment)."""


@dataclass
class CampaignInput:
    """The workflow's input, at enrolment and at each continue-as-new (then with `carried`).

    `workflow_instance_id` is the public 24-hex id (`campaign_engine.ids`), not the Temporal
    workflow id.
    """

    account_group_id: str
    campaign_id: str
    workflow_instance_id: str
    lead: Lead
    campaign: CampaignSnapshot
    carried: CarriedState | None = None
    """Legacy (continued as new by older code); None at enrolment and from current code."""
    continue_as_new_after_events: int | None = None
    """Continue as new past this many history events; None leaves it to the server's suggestion."""
    state: CampaignState | None = None
    """The state a run continued as new with (`workflows.state.carry`); None at enrolment."""


@dataclass
class DraftRequest:
    """Input of the `draft_content` activity: one step, rendered for one lead."""

    step: CampaignStep
    lead: Lead


@dataclass
class DraftedContent:
    """Output of `draft_content`: the subject (one line) and body as the reviewer sees them and
    as they are sent."""

    step_id: str
    subject: str
    body: str
    references: list[str] = field(default_factory=list)
    """A reply's thread: the Message-IDs of the earlier messages it answers, oldest first, as
    its `References` header carries them; the last is its `In-Reply-To` (RFC 5322 §3.6.4).
    Empty: not a reply (no threading headers), as in every draft made before threading."""


@dataclass
class DeliveryRequest:
    """Input of the `deliver_message` activity.

    `workflow_id` is the Temporal workflow id: with the step id it makes the Message-ID, the
    key that keeps a delivery at most once.
    """

    workflow_id: str
    lead: Lead
    content: DraftedContent
    send_window: SendWindow | None = None
    mailbox: str | None = None
    """The campaign's `from` (None: the deployment's sender)."""
    not_before: datetime | None = None
    """The workflow's time when it asked (`workflow.now()`); the activity takes the later of
    it and its own clock, so virtual time in tests and a late retry both see the right hour."""


@dataclass
class DeliveryReceipt:
    """What the delivery activity did: the message's id and the truth about its hand-over."""

    message_id: str
    outcome: DeliveryOutcome = DeliveryOutcome.SENT
    send_at: datetime | None = None
    """For `DEFERRED`: when to try again (aware UTC); None when waiting for a resume."""
    send_at_local: str | None = None
    """`send_at` in the lead's window zone, as operators read it (`2026-12-01T09:00-05:00`)."""
    deferred_because: Deferral | None = None
    slot_reserved: bool = False
    """A mailbox slot is held for this message (released if the instance stops meanwhile)."""


@dataclass
class ApproveRequest:
    """Input of the `approve` signal (the API sends it; operators may too)."""

    request_id: str = ""
    """Fresh per API call; the outcome is kept under it for the query that follows."""
    decided_by: str = "operator"
    """The API key id (never the key) that approved, or the operator's name."""
    if_match: list[str] | None = None
    """Conditional approval (HTTP `If-Match`, RFC 9110 §13.1.1): the gate ids the caller saw,
    or `["*"]` for any open gate. None: unconditional (today's behaviour). An empty list never
    matches (a malformed or weak-only header)."""


@dataclass
class ApprovalOutcomeRequest:
    """Input of the `approval_outcome` query: the `request_id` an approve signal carried."""

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
    """Audit record of a stop: why, who (`system` for an expired gate), when (workflow time),
    and the note or reason given."""

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
    event: str = "approval.pending"
    """`approval.pending`, `approval.reminder` or `approval.resolved` (`ApprovalEvent`)."""
    gate_id: str | None = None
    reminder_seconds: float | None = None
    """For a reminder: how long before expiry it was due (part of its event id)."""
    resolution: str | None = None
    """For `approval.resolved`: `approved`, `discarded`, `expired` or `stopped`."""
    decided_by: str | None = None
    decided_at: datetime | None = None


class ApprovalEvent(StrEnum):
    """Webhook event types about a gate (the `event` field of the signed POST)."""

    PENDING = "approval.pending"
    REMINDER = "approval.reminder"
    RESOLVED = "approval.resolved"


@dataclass
class GateDecision:
    """Audit record of how a gate was resolved."""

    step_id: str
    decision: Decision
    decided_by: str
    decided_at: datetime
    request_id: str
    gate_id: str | None = None
    """None for decisions recorded before gates had ids."""


@dataclass
class FailureRecord:
    """Why an instance failed: the activity's error type and message, for the operator."""

    step_id: str
    error_type: str | None
    """An `ActivityErrorType` value, or None for a failure without a type (a timeout)."""
    message: str
    attempt: int | None = None
    """The delivery attempt that failed last (1 = the first), when the activity reported it."""


class NextStepWait(StrEnum):
    """What the instance's next step waits for (`NextStep.waiting_for`)."""

    DRAFT = "draft"
    """Being drafted now (its gate opens next, if it has one)."""
    APPROVAL = "approval"
    """Drafted, its gate open: sent once approved."""
    DELIVERY = "delivery"
    """Approved (or needing no approval): being handed over now."""
    SEND_TIME = "send_time"
    """Approved, waiting for its send time (`ScheduledDelivery`: window, mailbox, pause,
    out of office)."""
    DELAY = "delay"
    """The previous step's delay: drafted when it ends."""


@dataclass
class NextStep:
    """The step an instance sends next, and when it is due: what the `lead_status` query says
    of an open instance (`workflows.status.next_step`)."""

    step_id: str
    waiting_for: NextStepWait
    due_at: datetime | None = None
    """When it moves on: the delay's end (`delay`), the send time (`send_time`; None while the
    campaign is paused); None while it waits for a draft, a delivery or a reviewer, or while
    a business-day delay's end is being worked out."""


@dataclass
class LeadStatus:
    """Result of the `lead_status` query and of a completed or stopped run; the details of a
    failed run's `ApplicationError`.

    The first six fields are the reference page's `leadStatus`; the rest is the audit the API's
    internals and operators read.
    """

    lead_id: str
    workflow_status: WorkflowStatus
    workflow_instance_id: str
    latest_step: str | None = None
    workflow_stop_reason: StopReason | None = None
    has_pending_approval: bool = False
    pending_content: DraftedContent | None = None
    gate_expires_at: datetime | None = None
    """When the open gate expires; None when none is open or it never expires."""
    gate_decisions: list[GateDecision] = field(default_factory=list)
    stop: StopRecord | None = None
    """Set once the instance is stopped."""
    gate_id: str | None = None
    """The open gate's opaque id (the instance's ETag), None when no gate is open."""
    gate_opened_at: datetime | None = None
    signal_input_problems: list[str] = field(default_factory=list)
    """The last few signal inputs that were partly not understood (the signals still applied)."""
    failure: FailureRecord | None = None
    """Set when the instance failed (`DRAFT_FAILED`, `DELIVERY_FAILED`): what the last attempt
    reported."""
    deliveries: list[DeliveryRecord] = field(default_factory=list)
    """Every step delivered so far, with its outcome: an `in_doubt` one may not have arrived."""
    scheduled: ScheduledDelivery | None = None
    """Set while approved content waits for its send time (or for the campaign's resume)."""
    campaign_paused_at: datetime | None = None
    """When the campaign was paused, as the `campaign_paused` signal told this instance."""
    inbound_messages: list[InboundRecord] = field(default_factory=list)
    """Replies, automatic answers, bounces and complaints matched to this instance, newest last
    (the latest few)."""
    out_of_office_hold: OutOfOfficeHold | None = None
    """Set while an out-of-office answer holds the instance's deliveries (the campaign's
    `outOfOfficeHold`); it may have just passed, until the next delivery is tried."""
    next_step: NextStep | None = None
    """The step sent next and when it is due; None once the instance is closed or its last
    step is sent (and in answers of workers older than the field)."""


@dataclass
class ApprovalOutcome:
    """Result of the `approval_outcome` query: what became of the approve signal with
    `request_id`, and the lead status it left behind."""

    request_id: str
    applied: bool | None
    """None when no signal with this request id has been seen (or it aged out of the record)."""
    refusal: ApprovalRefusal | None
    lead_status: LeadStatus
    gate_id: str | None = None
    """The gate this approval applied to (the 200's `ETag`)."""


DRAFT_CONTENT_ACTIVITY = "draft_content"
DELIVER_MESSAGE_ACTIVITY = "deliver_message"
NOTIFY_PENDING_APPROVAL_ACTIVITY = "notify_pending_approval"
BUSINESS_DAYS_LATER_ACTIVITY = "business_days_later"
RELEASE_SEND_SLOT_ACTIVITY = "release_send_slot"


@dataclass
class BusinessDaysRequest:
    """Input of `business_days_later`: the same local time `days` sending days after `at`, in
    the window's zone (the lead's when it has one)."""

    at: datetime
    days: int
    send_window: SendWindow | None = None
    lead_time_zone: str | None = None


@dataclass
class BusinessDaysResult:
    """Output of `business_days_later`: when the delay ends (aware UTC)."""

    until: datetime


@dataclass
class CampaignPauseEvent:
    """Input of the `campaign_paused` and `campaign_resumed` signals (the API's pause and resume
    send them to every running instance of the campaign in one batch)."""

    decided_by: str = "operator"
    at: str = ""
    """When the store recorded the pause or resume (ISO 8601), as the API answered it."""


class ActivityErrorType(StrEnum):
    """`ApplicationError.type` of activity failures: all but `TRANSIENT_DELIVERY_ERROR` and
    `RENDER_QUEUE_FULL` are raised non-retryable, since retrying cannot fix them."""

    TEMPLATE_RENDER_ERROR = "TemplateRenderError"
    """A template did not render for this lead, or exceeded its budget or output limit."""
    PERMANENT_DELIVERY_ERROR = "PermanentDeliveryError"
    """The mail server refused the message for good (SMTP 5xx)."""
    INVALID_ADDRESS = "InvalidAddress"
    """The lead's address (or the sender) is not one we can send to."""
    COMPOSITION_ERROR = "CompositionError"
    """The message cannot be built from the drafted content and the lead's data."""
    SMTPUTF8_UNSUPPORTED = "SmtpUtf8Unsupported"
    """The address needs SMTPUTF8 (RFC 6531) and the mail server does not offer it."""
    RECIPIENT_REFUSED = "RecipientRefused"
    """The recipient's server refused the address for good at `RCPT TO` (`5.1.x`, RFC 3463):
    a hard bounce; the address is suppressed and the workflow ends the instance `stopped` /
    `LEAD_BOUNCED`."""
    LEAD_SUPPRESSED = "LeadSuppressed"
    """The lead is on its account group's suppression list (it unsubscribed): nothing was sent,
    and the workflow ends the instance `stopped` / `LEAD_UNSUBSCRIBED`."""
    INVALID_SEND_WINDOW = "InvalidSendWindow"
    """The campaign's send window or the lead's time zone cannot be used (checked at PUT and
    enrolment, so only an older snapshot gets here)."""
    RENDER_QUEUE_FULL = "RenderQueueFull"
    """Retryable: the worker's render queue (its account group's share or the whole) could not
    take the draft's templates now; retried after the estimated wait (`next_retry_delay`),
    within the draft's retry policy."""
    TRANSIENT_DELIVERY_ERROR = "TransientDeliveryError"
    """Retryable: SMTP 4xx, the server unreachable; retried up to the delivery cap."""
    SENDER_NOT_ALLOWED = "SenderNotAllowed"
    """The message's `From:` (the campaign's `from`, else the shared sender) is not a configured
    mailbox its account group may send from (`CAMPAIGN_ENGINE_MAILBOXES`' `account_groups`):
    checked again at delivery, before any claim or mailbox slot, so a workflow input that never
    went through the API's PUT (a forged start, an older snapshot after the mailbox changed
    hands) sends nothing."""
    PERMANENT_NOTIFICATION_ERROR = "PermanentNotificationError"
    """The webhook cannot be sent: no secret any more, a refused destination, or an answer
    that retrying cannot change (3xx, 4xx but 408 and 429)."""
