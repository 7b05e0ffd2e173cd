"""Temporal's payload size limit, checked before Temporal sees a campaign.

Temporal refuses every payload larger than its blob size limit — a workflow's input, an
activity's input or result, a signal's — with `INVALID_ARGUMENT` ("Blob data size exceeds
limit."): 2 MiB by default, dynamic config `limit.blobSize.error` (it logs a warning from
`limit.blobSize.warn`, 512 KiB); a whole gRPC message is limited to 4 MiB. See
https://docs.temporal.io/self-hosted-guide/defaults.

The largest payload of a campaign instance is its workflow input (`CampaignInput`) when it
continues as new at a gate: the campaign snapshot, the lead, and the carried state holding the
drafted message at the largest a template may render, the audit record of a gate per step and
the last 128 approval outcomes. Temporal's JSON converter writes every non-ASCII character as a
`\\uXXXX` escape, so a character costs up to 12 bytes (two escapes for one outside the Basic
Multilingual Plane). A campaign is accepted only if, with every other part at its worst,

    snapshot + worst lead + worst carried state + MARGIN_BYTES <= blob size limit.

Every other payload of an instance is smaller: a draft (subject and body at their longest,
12 bytes a character, about 1.2 MB), a delivery request (a draft and the lead), a draft request
(one step and the lead).
"""

from __future__ import annotations

import functools
from dataclasses import replace
from datetime import UTC, datetime

import temporalio.converter
from temporalio.api.common.v1 import Payloads

from campaign_engine.ids import message_id_for, workflow_id_for
from workflows.campaign import MAX_REQUEST_ID_CHARS, MAX_WHO_CHARS
from workflows.state import (
    APPROVAL_OUTCOMES_KEPT,
    INBOUND_IDS_KEPT,
    INBOUND_MESSAGES_KEPT,
    MAX_SIGNAL_INPUT_PROBLEM_CHARS,
    NOTICES_CARRIED,
    SIGNAL_INPUT_PROBLEMS_KEPT,
)
from workflows.types import (
    ApprovalOutcomeRecord,
    ApprovalRefusal,
    CampaignInput,
    CampaignPause,
    CampaignSnapshot,
    CampaignState,
    Decision,
    Deferral,
    DeliveryOutcome,
    DeliveryRecord,
    DraftedContent,
    Gate,
    GateDecision,
    InboundKind,
    InboundRecord,
    Lead,
    OutOfOfficeHold,
    PendingApprovalNotice,
    Phase,
    ResumeAt,
    ScheduledDelivery,
)

DEFAULT_BLOB_SIZE_LIMIT_BYTES = 2 * 1024 * 1024
"""Temporal's default `limit.blobSize.error`."""
MARGIN_BYTES = 64 * 1024
"""Left free under the limit: payload metadata, and fields a later version may add."""

_WIDEST = "\U0001f600"
"""A character Temporal's JSON converter writes in 12 bytes (`\\ud83d\\ude00`)."""


class PayloadBudgetExceeded(ValueError):
    """A campaign that would not fit under Temporal's blob size limit; says by how much."""

    def __init__(self, needed: int, allowed: int, limit: int) -> None:
        super().__init__(
            f"the campaign takes {needed:,} bytes in a workflow instance's input at its largest "
            f"(with a drafted message carried over continue-as-new); at most {allowed:,} fit "
            f"under Temporal's payload size limit of {limit:,} bytes"
        )
        self.needed = needed
        self.allowed = allowed
        self.limit = limit


def payload_bytes(value: object) -> int:
    """Bytes of `value` as one Temporal payload, encoded by the SDK's default converter."""
    payloads = temporalio.converter.default().payload_converter.to_payloads([value])
    return Payloads(payloads=payloads).ByteSize()


def _widest(length: int) -> str:
    return _WIDEST * length


def worst_case_overhead_bytes(
    *, max_steps: int, max_subject_chars: int, max_body_chars: int
) -> int:
    """Bytes the lead and the carried state add to a workflow input, each at its largest.

    The lead: names and company 200 characters, e-mail 254, every one 12 bytes. The carried
    state (`CampaignState`, every field set): a draft of `max_subject_chars` +
    `max_body_chars`, an approval audit record and a delivery record for each of `max_steps`
    steps, `APPROVAL_OUTCOMES_KEPT` approval outcomes, the kept signal input problems,
    `NOTICES_CARRIED` webhook notices (no stop: a run never continues as new with one
    pending); who decided and request ids at the longest a signal may carry (`MAX_WHO_CHARS`,
    `MAX_REQUEST_ID_CHARS`), every character 12 bytes.
    """
    return _worst_case_overhead_bytes(max_steps, max_subject_chars, max_body_chars)


@functools.cache
def _worst_case_overhead_bytes(max_steps: int, max_subject_chars: int, max_body_chars: int) -> int:
    when = datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    step_id = "s" * 64
    content = DraftedContent(
        step_id=step_id,
        subject=_widest(max_subject_chars),
        body=_widest(max_body_chars),
    )
    who, request_id = _widest(MAX_WHO_CHARS), _widest(MAX_REQUEST_ID_CHARS)
    gate = Gate("f" * 32, when, when)
    notice = PendingApprovalNotice(
        account_group_id="f" * 24,
        campaign_id="f" * 24,
        workflow_instance_id="f" * 24,
        lead_id="f" * 24,
        step_id=step_id,
        webhook_url="",  # counted per campaign: `_carried_url_bytes`
        expires_at=when,
        event="approval.resolved",
        gate_id=gate.id,
        reminder_seconds=1e300,
        resolution="discarded",
        decided_by=who,
        decided_at=when,
    )
    carried = CampaignState(
        phase=Phase.AWAITING_APPROVAL,
        step_index=max_steps - 1,
        at=ResumeAt.GATE,
        latest_step=step_id,
        content=content,
        gate=gate,
        delay_until=when,
        scheduled=ScheduledDelivery(
            step_id, Deferral.MAILBOX_SPACING, when, _widest(64), deferrals=10**9
        ),
        # No stop: a run never continues as new with one pending (a stop wins, in that run).
        gate_decisions=[
            GateDecision(step_id, Decision.APPROVED, who, when, request_id, gate.id)
            for _ in range(max_steps)
        ],
        deliveries=[
            DeliveryRecord(step_id, "m" * 300, DeliveryOutcome.ALREADY_SENT, when)
            for _ in range(max_steps)
        ],
        approval_outcomes=[
            ApprovalOutcomeRecord(request_id, False, ApprovalRefusal.ALREADY_APPROVED, gate.id)
            for _ in range(APPROVAL_OUTCOMES_KEPT)
        ],
        signal_input_problems=[
            _widest(MAX_SIGNAL_INPUT_PROBLEM_CHARS) for _ in range(SIGNAL_INPUT_PROBLEMS_KEPT)
        ],
        campaign_paused=CampaignPause(_widest(MAX_REQUEST_ID_CHARS), who),
        # Automatic answers: a reply (the one kind with an excerpt) stops the run, so it is never
        # carried.
        inbound_messages=[
            InboundRecord(request_id, InboundKind.AUTO_REPLY, when, "", "2026-12-31")
            for _ in range(INBOUND_MESSAGES_KEPT)
        ],
        inbound_applied=["f" * 16 for _ in range(INBOUND_IDS_KEPT)],
        out_of_office_hold=OutOfOfficeHold(when, "2026-12-31", when, request_id, capped=True),
        notices=[notice] * NOTICES_CARRIED,
        runs=10**9,
    )
    lead = Lead(
        id="f" * 24,
        email=_widest(254),
        first_name=_widest(200),
        last_name=_widest(200),
        company=_widest(200),
        time_zone="/" * 64,
    )
    bare = _input(CampaignSnapshot(name="", steps=[]))
    return payload_bytes(replace(bare, lead=lead, state=carried)) - payload_bytes(bare)


def _input(snapshot: CampaignSnapshot) -> CampaignInput:
    return CampaignInput(
        account_group_id="f" * 24,
        campaign_id="f" * 24,
        workflow_instance_id="f" * 24,
        lead=Lead(id="", email=""),
        campaign=snapshot,
        continue_as_new_after_events=10**9,
    )


def _carried_url_bytes(snapshot: CampaignSnapshot) -> int:
    """The webhook URL again in each notice a run may carry over continue-as-new: a normalised
    URL is ASCII (IDNA, percent-encoding), one byte a character."""
    return NOTICES_CARRIED * len(snapshot.webhook_url or "")


def _carried_reference_bytes(snapshot: CampaignSnapshot) -> int:
    """The Message-IDs a threaded step's draft carries (`DraftedContent.references`) at the
    most this campaign can: counted per campaign, like the webhook URL, so a campaign without
    threaded steps keeps its whole budget. Each is ASCII (`message_id_for` of the longest
    ids), one byte a character, plus its quotes and comma."""
    workflow_id = workflow_id_for("f" * 24, "f" * 24, "f" * 24)
    return max(
        (
            sum(len(message_id_for(workflow_id, step_id)) + 3 for step_id in step.thread_step_ids)
            for step in snapshot.steps
        ),
        default=0,
    )


def check_campaign_size(
    snapshot: CampaignSnapshot,
    *,
    limit_bytes: int,
    max_steps: int,
    max_subject_chars: int,
    max_body_chars: int,
) -> int:
    """Raises `PayloadBudgetExceeded` unless every instance of this campaign can start and
    continue as new under `limit_bytes`; returns the largest input's size in bytes.

    Cheap enough for every enrolment: one JSON encoding of the snapshot (the worst case of the
    rest is computed once per process), skipped when the characters alone are too many.
    """
    allowed = limit_bytes - MARGIN_BYTES
    overhead = worst_case_overhead_bytes(
        max_steps=max_steps, max_subject_chars=max_subject_chars, max_body_chars=max_body_chars
    )
    # Every character takes at least one byte: a snapshot longer than that is refused without
    # encoding megabytes of it.
    characters = len(snapshot.name) + sum(
        len(step.id) + len(step.subject) + len(step.body) for step in snapshot.steps
    )
    if characters + overhead > allowed:
        raise PayloadBudgetExceeded(characters + overhead, allowed, limit_bytes)
    needed = (
        payload_bytes(_input(snapshot))
        + overhead
        + _carried_url_bytes(snapshot)
        + _carried_reference_bytes(snapshot)
    )
    if needed > allowed:
        raise PayloadBudgetExceeded(needed, allowed, limit_bytes)
    return needed
