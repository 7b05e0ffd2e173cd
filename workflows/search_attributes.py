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

ALL: tuple[SearchAttributeKey, ...] = (  # type: ignore[type-arg]
    ACCOUNT_GROUP_ID,
    CAMPAIGN_ID,
    LEAD_ID,
    HAS_PENDING_APPROVAL,
    LEAD_WORKFLOW_STATUS,
)
"""Every custom search attribute the workflow upserts; a server must know them all."""
