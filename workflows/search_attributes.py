"""Custom search attributes: how operators find instances in the Temporal UI and visibility API.

Stored unencrypted by Temporal, so they hold ids and states only — never a lead's e-mail or name.
Registered on the dev server by `make dev` and the test fixtures, by the set-up job in compose.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

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
