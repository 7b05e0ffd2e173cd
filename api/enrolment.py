"""What enrolling a lead takes, shared by `POST …/workflow-instances` and its batch twin.

Both routes record an enrolment row before they start the lead's instance (inbound matching by
address must know an instance before it can receive mail), with the same hashes and the same
sending mailbox, and both start the instance on the campaign's snapshot. The checks around it
differ (the single route raises, the batch answers per row) and stay in the routes.
"""

from __future__ import annotations

from api.deps import CampaignScope
from api.instances import WorkflowInstances
from api.schemas import LeadBody
from campaign_engine import unsubscribe
from campaign_engine.addresses import InvalidAddress
from campaign_engine.enrolments import EnrolmentRow
from campaign_engine.ids import InstanceRef
from campaign_engine.settings import Settings
from workflows.types import CampaignSnapshot, LeadStatus


def sending_mailbox(settings: Settings, snapshot: CampaignSnapshot) -> str | None:
    """The lowercase address the campaign sends from (its `from`, or the deployment's sender),
    recorded with each enrolment for the mailbox reader's matching; None for a `from` that is no
    address (a campaign stored before `from` was checked: its delivery reports it)."""
    try:
        return settings.sending_address(snapshot.mailbox)
    except InvalidAddress:
        return None


def enrolment_row(
    scope: CampaignScope,
    lead: LeadBody,
    *,
    email_hash: str,
    unsubscribe_key: bytes,
    mailbox: str | None,
) -> EnrolmentRow:
    """The enrolment row of `lead` in the scope's campaign: its derived instance id, the keyed
    hashes of its address and domain (`campaign_engine.unsubscribe`), the sending mailbox."""
    return EnrolmentRow(
        lead_id=lead.id,
        workflow_instance_id=InstanceRef.of_lead(
            scope.account_group_id, scope.campaign_id, lead.id
        ).workflow_instance_id,
        email_hash=email_hash,
        domain_hash=unsubscribe.domain_hash(unsubscribe_key, lead.email),
        mailbox=mailbox,
    )


async def start_instance(
    instances: WorkflowInstances,
    scope: CampaignScope,
    lead: LeadBody,
    snapshot: CampaignSnapshot,
) -> LeadStatus:
    """Starts the lead's instance on `snapshot` (`WorkflowInstances.enrol`): raises
    `LeadAlreadyEnrolled` (409) when it has one, `TemporalUnavailable` (502) when Temporal does
    not answer."""
    return await instances.enrol(
        scope.account_group_id, scope.campaign_id, lead.to_lead(), snapshot
    )
