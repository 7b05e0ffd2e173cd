"""Custom search attributes: how operators find instances in the Temporal UI and visibility API.

Stored unencrypted by Temporal, so they hold ids and states only — never a lead's e-mail or name.
Registered on the dev server by `make dev` and the test fixtures, by the set-up job in compose.
"""

from __future__ import annotations

from typing import Any

from temporalio.common import SearchAttributeKey, SearchAttributeUpdate

from workflows.types import Gate, WorkflowStatus

ACCOUNT_GROUP_ID = SearchAttributeKey.for_keyword("AccountGroupId")
CAMPAIGN_ID = SearchAttributeKey.for_keyword("CampaignId")
LEAD_ID = SearchAttributeKey.for_keyword("LeadId")
HAS_PENDING_APPROVAL = SearchAttributeKey.for_bool("HasPendingApproval")
LEAD_WORKFLOW_STATUS = SearchAttributeKey.for_keyword("LeadWorkflowStatus")
LATEST_STEP = SearchAttributeKey.for_keyword("LatestStep")
"""The step the instance is at (a campaign's step id: author-chosen, never lead data)."""
GATE_ID = SearchAttributeKey.for_keyword("GateId")
"""The latest gate's opaque id (kept after it closes; `HasPendingApproval` says if it is open)."""
GATE_OPENED_AT = SearchAttributeKey.for_datetime("GateOpenedAt")
GATE_EXPIRES_AT = SearchAttributeKey.for_datetime("GateExpiresAt")

ALL: tuple[SearchAttributeKey, ...] = (  # type: ignore[type-arg]
    ACCOUNT_GROUP_ID,
    CAMPAIGN_ID,
    LEAD_ID,
    HAS_PENDING_APPROVAL,
    LEAD_WORKFLOW_STATUS,
    LATEST_STEP,
    GATE_ID,
    GATE_OPENED_AT,
    GATE_EXPIRES_AT,
)
"""Every custom search attribute the workflow upserts; a server must know them all."""


def phase_updates(
    status: WorkflowStatus,
    pending: bool,
    latest_step: str | None,
    last_gate: Gate | None,
    index_gates: bool,
) -> list[SearchAttributeUpdate[Any]]:
    """The upsert of a phase change: `HasPendingApproval` and `LeadWorkflowStatus`; with
    `index_gates` (instances past the `gate-search-attributes` patch) also `LatestStep` and the
    latest gate's `GateId`, `GateOpenedAt` and `GateExpiresAt` (kept after the gate closes)."""
    updates: list[SearchAttributeUpdate[Any]] = [
        HAS_PENDING_APPROVAL.value_set(pending),
        LEAD_WORKFLOW_STATUS.value_set(status.value),
    ]
    if index_gates and latest_step is not None:
        updates.append(LATEST_STEP.value_set(latest_step))
    if index_gates and last_gate is not None:
        updates.append(GATE_ID.value_set(last_gate.id))
        updates.append(GATE_OPENED_AT.value_set(last_gate.opened_at))
        if last_gate.expires_at is not None:
            updates.append(GATE_EXPIRES_AT.value_set(last_gate.expires_at))
    return updates
